//! WebSocket streams: `GET /v1/ws`. One connection carries several subscriptions to the same
//! streams as the SSE routes (`jobs`, filtered; `job`, one job with its samples; `cluster`, the
//! periodic status plus the job changes; `nodes` and `partitions`, filtered), each answered with
//! an ack and then replayed from the event log after its `last_event_id` and followed live.
//! The seeds' WebSocket routes (`/ws`, `/ws/cluster`) are this handler speaking their
//! [`Dialect`]. A `job_log` subscription follows a job's output instead (the SSE log route's
//! pump, [`log_stream::follow`]: from a byte offset, then `completed`; owner or admin only).
//!
//! Each event subscription runs the SSE pump ([`stream::pump_for`]) unchanged, so replay, the no-gap /
//! no-duplicate hand-over to live events, `reset`, `stream_closed`, falling behind and shutdown
//! behave exactly as on the SSE routes; its events are re-framed as JSON messages carrying the
//! event id and the subscription id. Everything the server sends goes through one bounded
//! channel per connection, drained by a single writer task. The server pings every
//! [`PING_EVERY`] and closes a connection that has not sent anything (a Pong included) for
//! [`DEAD_AFTER`].

use super::dialects::{self, ClusterFlags, Dialect, Request};
use super::identity::Identity;
use super::log_stream::{self, LogMessage};
use super::request::job_id;
use super::stream::{self, StreamFilter, Subscription, CONNECTION_BUFFER};
use super::stream_filter::{JOB_PARAMS, NODE_PARAMS, PARTITION_PARAMS};
use super::AppState;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// How often the server pings.
const PING_EVERY: Duration = Duration::from_secs(20);
/// Silence after which a peer is considered gone and its connection closed.
const DEAD_AFTER: Duration = Duration::from_secs(40);
/// Subscriptions one connection may hold at once.
const MAX_SUBSCRIPTIONS: usize = 32;
/// How long the writer may take to flush the last messages and the close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Options each stream accepts in `subscribe`: the query parameters of its SSE twin (one list,
/// `stream_filter`'s), and a cursor.
const CURSOR: &[&str] = &["last_event_id"];
const JOBS_OPTIONS: &[&[&str]] = &[JOB_PARAMS, CURSOR];
const CLUSTER_OPTIONS: &[&[&str]] = &[JOB_PARAMS, &["interval_seconds"], CURSOR];
const JOB_OPTIONS: &[&[&str]] = &[&["job_id", "exclude_samples"], CURSOR];
const NODES_OPTIONS: &[&[&str]] = &[NODE_PARAMS, CURSOR];
const PARTITIONS_OPTIONS: &[&[&str]] = &[PARTITION_PARAMS, CURSOR];
/// `job_log`: the SSE log route's parameters, the job, and the byte offset to resume from
/// (`last_event_id`, the id of the last `log` message, wins over `offset`).
const JOB_LOG_OPTIONS: &[&[&str]] = &[&["job_id", "stream", "offset"], CURSOR];

/// The keep-alive timing of a connection; tests use shorter intervals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heartbeat {
    pub(crate) ping_every: Duration,
    pub(crate) dead_after: Duration,
}

impl Heartbeat {
    pub(crate) const DEFAULT: Heartbeat = Heartbeat {
        ping_every: PING_EVERY,
        dead_after: DEAD_AFTER,
    };
}

/// `GET /v1/ws`, `/ws` or `/ws/cluster` (by `dialect`): checks the query (only the URL
/// credentials) and the `Origin` (403 before upgrading), then upgrades.
#[allow(clippy::too_many_arguments)]
pub async fn upgrade(
    dialect: Dialect,
    who: Identity,
    params: HashMap<String, String>,
    origin: Option<String>,
    host: Option<String>,
    ws: Ws,
    state: AppState,
) -> Response {
    if let Err(err) = super::stream_filter::reject_unknown(&params, &[]) {
        return err.into_response();
    }
    if !origin_allowed(origin.as_deref(), host.as_deref(), &state.allowed_origins) {
        // The origin is a client-chosen header; it is not logged.
        let body = json!({
            "error": "forbidden",
            "message": "This Origin may not open WebSocket streams (see --allowed-origins)",
        });
        return warp::reply::with_status(warp::reply::json(&body), StatusCode::FORBIDDEN)
            .into_response();
    }
    ws.on_upgrade(move |socket| serve(socket, state, who, Heartbeat::DEFAULT, dialect))
        .into_response()
}

/// Requests without an `Origin` (non-browser clients) pass; so do pages from the server's own
/// host and the configured origins. Browsers always send `Origin` on WebSocket handshakes, so
/// this is what stops another site's page from using a visitor's credentials.
pub(super) fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if allowed.contains(&origin) || allowed.iter().any(|o| o == "*") {
        return true;
    }
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.trim()))
}

/// One open connection's subscriptions and its outgoing channel.
struct Connection {
    state: AppState,
    /// Who opened the connection: every subscription is scoped to what they may see.
    who: Identity,
    see_all: bool,
    out: mpsc::Sender<Message>,
    subscriptions: HashMap<String, JoinHandle<()>>,
    next_id: u64,
    heartbeat: Heartbeat,
    dialect: Dialect,
}

/// Why the reading side stopped.
struct Closed;

pub(crate) async fn serve(
    socket: WebSocket,
    state: AppState,
    who: Identity,
    heartbeat: Heartbeat,
    dialect: Dialect,
) {
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outgoing) = mpsc::channel::<Message>(CONNECTION_BUFFER);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut shutdown = state.shutdown.clone();
    let see_all = super::jobs::users_see_all(&state);
    let mut conn = Connection {
        state,
        who,
        see_all,
        out,
        subscriptions: HashMap::new(),
        next_id: 0,
        heartbeat,
        dialect,
    };
    // Seed 001's clients are subscribed to everything from the start.
    let opened = if dialect == Dialect::Cluster {
        conn.cluster_flags(ClusterFlags::ALL).await
    } else {
        Ok(())
    };

    let mut ping =
        tokio::time::interval_at(Instant::now() + heartbeat.ping_every, heartbeat.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let dead = tokio::time::sleep(heartbeat.dead_after);
    tokio::pin!(dead);
    let close = loop {
        if opened.is_err() {
            break None;
        }
        tokio::select! {
            received = incoming.next() => {
                let Some(Ok(message)) = received else { break None };
                // Any frame, a Pong included, shows the peer is alive.
                dead.as_mut().reset(Instant::now() + heartbeat.dead_after);
                if message.is_close() {
                    break None;
                }
                if conn.handle(&message).await.is_err() {
                    break None;
                }
            }
            _ = ping.tick() => {
                // A full channel means the peer is not reading; the dead-peer timer decides.
                let _ = conn.out.try_send(Message::ping(Vec::new()));
            }
            _ = &mut dead => {
                tracing::info!("closing a WebSocket whose peer stopped answering");
                break Some(Message::close_with(1001u16, "no answer to pings"));
            }
            // The watch guard must not live across the awaits in the other branches.
            _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => {
                break Some(Message::close_with(1001u16, "server shutting down"));
            }
            _ = conn.out.closed() => break None,
        }
    };

    for (_, task) in conn.subscriptions.drain() {
        task.abort();
    }
    if let Some(close) = close {
        let _ = conn.out.try_send(close);
    }
    drop(conn);
    let abort = writer.abort_handle();
    if tokio::time::timeout(CLOSE_GRACE, writer).await.is_err() {
        abort.abort();
    }
}

impl Connection {
    /// Answers one client frame; `Err` when the connection should close.
    async fn handle(&mut self, message: &Message) -> Result<(), Closed> {
        if message.is_ping() || message.is_pong() {
            return Ok(()); // tungstenite answers pings itself
        }
        let Ok(text) = message.to_str() else {
            return self.error("binary messages are not supported").await;
        };
        let parsed = match dialects::parse_request(text, self.dialect) {
            Ok(parsed) => parsed,
            Err(err) => return self.error(&err).await,
        };
        match parsed {
            Request::Ping => self.reply(json!({"type": "pong"})).await,
            Request::Flags(flags) => self.cluster_flags(flags).await,
            Request::UnsubscribeAll => {
                let ids: Vec<String> = self.subscriptions.keys().cloned().collect();
                for (_, task) in self.subscriptions.drain() {
                    task.abort();
                }
                self.reply(json!({"type": "unsubscribed", "subscriptions": ids}))
                    .await
            }
            Request::Subscribe { stream, options } if stream == "job_log" => {
                self.subscribe_log(options).await
            }
            Request::Subscribe { stream, options } => {
                match self.subscribe(&stream, options) {
                    Ok((id, sub, start)) => {
                        // Without a cursor the subscription starts "now": fix that point before
                        // the ack, so an event committed after the client saw the ack is
                        // replayed from the log rather than counted as before the start.
                        let start = stream::start_from(&self.state, start).await;
                        // The ack goes out before the pump starts, so it precedes every event.
                        self.reply(
                            json!({"type": "subscribed", "subscription": id, "stream": sub.stream}),
                        )
                        .await?;
                        self.start(id, sub, start);
                        Ok(())
                    }
                    Err(message) => self.error(&message).await,
                }
            }
            Request::Unsubscribe(subscription) => {
                match self.subscriptions.remove(&subscription) {
                    Some(task) => {
                        // Dropping the pump unregisters it and frees its feed receiver.
                        task.abort();
                        self.reply(json!({"type": "unsubscribed", "subscription": subscription}))
                            .await
                    }
                    None => {
                        self.error(&format!("no subscription {subscription:?}"))
                            .await
                    }
                }
            }
        }
    }

    /// Validates a `subscribe`: the new subscription's id, what it streams and its cursor.
    fn subscribe(
        &mut self,
        stream: &str,
        options: Map<String, Value>,
    ) -> Result<(String, Subscription, Option<i64>), String> {
        self.subscriptions.retain(|_, task| !task.is_finished());
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(format!(
                "at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
            ));
        }
        let allowed = match stream {
            "jobs" => JOBS_OPTIONS,
            "job" => JOB_OPTIONS,
            "cluster" => CLUSTER_OPTIONS,
            "nodes" => NODES_OPTIONS,
            "partitions" => PARTITIONS_OPTIONS,
            other => {
                return Err(format!(
                    "unknown stream {other:?} (expected jobs, job, cluster, nodes, partitions or job_log)"
                ))
            }
        };
        let params = option_params(options, allowed)?;
        let start = stream::cursor(None, &params).map_err(|e| e.to_string())?;
        let sub = if stream == "jobs" {
            let filter = StreamFilter::parse(&params, true).map_err(|e| e.to_string())?;
            Subscription::new("jobs", filter)
        } else if stream == "cluster" {
            let every = super::request::int_param(
                &params,
                "interval_seconds",
                stream::STATUS_EVERY.as_secs() as i64,
                1,
                3600,
            )
            .map_err(|e| e.to_string())?;
            let filter = StreamFilter::parse(&params, true).map_err(|e| e.to_string())?;
            Subscription {
                status_every: Some(Duration::from_secs(every as u64)),
                ..Subscription::new("cluster", filter)
            }
        } else if stream == "nodes" {
            let filter = StreamFilter::parse_nodes(&params).map_err(|e| e.to_string())?;
            Subscription::new("nodes", filter)
        } else if stream == "partitions" {
            let filter = StreamFilter::parse_partitions(&params).map_err(|e| e.to_string())?;
            Subscription::new("partitions", filter)
        } else {
            let id = params
                .get("job_id")
                .ok_or("the job stream needs options.job_id")?;
            let id = job_id(id).map_err(|e| e.to_string())?;
            let mut job_params = HashMap::from([("job_ids".to_owned(), id.clone())]);
            if let Some(v) = params.get("exclude_samples") {
                job_params.insert("exclude_samples".to_owned(), v.clone());
            }
            Subscription {
                stream: "job",
                filter: StreamFilter::parse(&job_params, false).map_err(|e| e.to_string())?,
                single_job: Some(id),
                status_every: None,
                current_state_first: start.is_none(),
                _registration: None,
            }
        };
        // A user's job subscriptions carry only their own jobs (samples always only their own).
        let see_all = self.see_all && matches!(sub.stream, "jobs" | "cluster");
        let sub = Subscription {
            filter: sub.filter.scoped(&self.who, see_all),
            ..sub
        };
        self.next_id += 1;
        Ok((format!("s{}", self.next_id), sub, start))
    }

    /// A `job_log` subscription: the job's output from a byte offset, as on
    /// `GET /v1/stream/jobs/{id}/log` (same pump, same owner-or-admin rule), its messages framed
    /// like the other streams' with `stream` = `job_log` and the resume offset as `id`.
    async fn subscribe_log(&mut self, options: Map<String, Value>) -> Result<(), Closed> {
        self.subscriptions.retain(|_, task| !task.is_finished());
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            let message = format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection");
            return self.error(&message).await;
        }
        let parsed = option_params(options, JOB_LOG_OPTIONS).and_then(|params| {
            let id = params
                .get("job_id")
                .ok_or("the job_log stream needs options.job_id")?;
            let id = job_id(id).map_err(|e| e.to_string())?;
            let stream = super::logs::stream_param(&params).map_err(|e| e.to_string())?;
            let start = match params.get("last_event_id").or(params.get("offset")) {
                None => 0,
                Some(raw) => raw
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or("last_event_id and offset must be byte offsets")?,
            };
            Ok::<_, String>((id, stream, start))
        });
        let (job, stream, start) = match parsed {
            Ok(parsed) => parsed,
            Err(message) => return self.error(&message).await,
        };
        let follow = log_stream::follow(&self.state, &self.who, &job, stream, start, "ws");
        let messages = match follow.await {
            Ok(messages) => messages,
            Err(err) => return self.error(&err.to_string()).await,
        };
        self.next_id += 1;
        let id = format!("s{}", self.next_id);
        // The ack goes out before the messages are forwarded, so it precedes them.
        self.reply(json!({"type": "subscribed", "subscription": id, "stream": "job_log"}))
            .await?;
        let forward = forward_log(id.clone(), messages, self.out.clone(), self.dialect);
        self.subscriptions.insert(id, tokio::spawn(forward));
        Ok(())
    }

    /// Seed 001's subscription: whatever the connection had is replaced by one `cluster`
    /// subscription with the status every 5 s (`status`) and the job changes
    /// (`state_changes`), from now on; both off leaves it with none.
    async fn cluster_flags(&mut self, flags: ClusterFlags) -> Result<(), Closed> {
        for (_, task) in self.subscriptions.drain() {
            task.abort();
        }
        if !flags.status && !flags.state_changes {
            return self
                .reply(json!({"type": "subscribed", "subscription": null, "stream": "cluster", "data": flags.describe()}))
                .await;
        }
        let filter = if flags.state_changes {
            let filter = match StreamFilter::parse(&HashMap::new(), true) {
                Ok(filter) => filter,
                Err(err) => return self.error(&err.to_string()).await,
            };
            filter.scoped(&self.who, self.see_all)
        } else {
            StreamFilter::Nothing
        };
        let sub = Subscription {
            status_every: flags.status.then_some(stream::STATUS_EVERY),
            ..Subscription::new("cluster", filter)
        };
        // From now on, fixed before the ack (as for `subscribe`).
        let start = stream::start_from(&self.state, None).await;
        self.next_id += 1;
        let id = format!("s{}", self.next_id);
        self.reply(json!({
            "type": "subscribed",
            "subscription": id,
            "stream": "cluster",
            "data": flags.describe(),
        }))
        .await?;
        self.start(id, sub, start);
        Ok(())
    }

    /// Runs the subscription's pump and re-frames its events onto the connection's channel.
    fn start(&mut self, id: String, sub: Subscription, start: stream::Start) {
        // Capacity 1: the connection's channel is the buffer; this one only hands over.
        let (events_tx, events) = mpsc::channel::<stream::Outgoing>(1);
        let pump = stream::pump_for(&self.state, sub, "ws", start, events_tx);
        let forward = forward(id.clone(), events, self.out.clone(), self.dialect);
        let task = tokio::spawn(async move {
            futures_util::future::join(pump, forward).await;
        });
        self.subscriptions.insert(id, task);
    }

    /// Sends a control message, giving up (closing) if the peer has not read anything for the
    /// dead-peer interval.
    async fn reply(&self, message: Value) -> Result<(), Closed> {
        let send = self.out.send(Message::text(message.to_string()));
        match tokio::time::timeout(self.heartbeat.dead_after, send).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Closed),
        }
    }

    async fn error(&self, message: &str) -> Result<(), Closed> {
        self.reply(dialects::error_message(message, self.dialect))
            .await
    }
}

/// `options` as the query parameters the SSE routes take: strings as they are, arrays of
/// strings as comma lists, booleans and numbers as text; `null` is absent.
fn option_params(
    options: Map<String, Value>,
    allowed: &[&[&str]],
) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for (key, value) in options {
        if !allowed.iter().any(|list| list.contains(&key.as_str())) {
            return Err(format!(
                "unknown option {key:?} (expected one of {})",
                allowed.concat().join(", ")
            ));
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("option {key:?} must be a string or an array of strings"))?
                .join(","),
            Value::Object(_) => return Err(format!("option {key:?} must not be an object")),
        };
        params.insert(key, text);
    }
    Ok(params)
}

/// Moves one subscription's events to the connection, until the pump ends or the connection
/// goes away.
async fn forward(
    subscription: String,
    mut events: mpsc::Receiver<stream::Outgoing>,
    out: mpsc::Sender<Message>,
    dialect: Dialect,
) {
    while let Some(event) = events.recv().await {
        let Some(message) = ws_message(&event, &subscription, dialect) else {
            continue;
        };
        if out.send(Message::text(message)).await.is_err() {
            return;
        }
    }
}

/// Moves one `job_log` subscription's messages to the connection. Dropping the receiver (the
/// task aborted by `unsubscribe`, or the connection closing) ends its pump.
async fn forward_log(
    subscription: String,
    mut messages: mpsc::Receiver<LogMessage>,
    out: mpsc::Sender<Message>,
    dialect: Dialect,
) {
    while let Some(message) = messages.recv().await {
        let outgoing =
            stream::Outgoing::control(message.name, message.offset, "job_log", &message.data);
        let Some(text) = ws_message(&outgoing, &subscription, dialect) else {
            continue;
        };
        if out.send(Message::text(text)).await.is_err() {
            return;
        }
    }
}

/// A stream message as a WebSocket message: its envelope plus `id` and `subscription`. The
/// `connected` greeting is dropped: the `subscribed` ack stands in for it.
fn ws_message(message: &stream::Outgoing, subscription: &str, dialect: Dialect) -> Option<String> {
    if message.name == "connected" {
        return None;
    }
    Some(dialects::frame(message, subscription, dialect))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_against_host_and_list() {
        let none: &[String] = &[];
        assert!(origin_allowed(None, Some("h:8080"), none));
        assert!(origin_allowed(Some("http://H:8080"), Some("h:8080"), none));
        assert!(!origin_allowed(
            Some("http://evil.org"),
            Some("h:8080"),
            none
        ));
        assert!(!origin_allowed(Some("null"), Some("h:8080"), none));
        assert!(!origin_allowed(Some("http://h:8080"), None, none));
        let list = ["https://dash.example.org".to_owned()];
        assert!(origin_allowed(
            Some("https://Dash.example.org"),
            Some("h"),
            &list
        ));
        assert!(!origin_allowed(
            Some("http://dash.example.org"),
            Some("h"),
            &list
        ));
    }

    #[test]
    fn stream_messages_become_ws_messages_with_id_and_subscription() {
        let event = stream::Outgoing {
            id: 42,
            name: "job_event",
            json: r#"{"type":"job_created","stream":"jobs","data":{"a":1}}"#.into(),
        };
        let message: Value =
            serde_json::from_str(&ws_message(&event, "s1", Dialect::Native).unwrap()).unwrap();
        assert_eq!(
            message,
            json!({"type": "job_created", "stream": "jobs", "data": {"a": 1}, "id": 42, "subscription": "s1"})
        );
        let connected = stream::Outgoing {
            id: 7,
            name: "connected",
            json: r#"{"type":"connected"}"#.into(),
        };
        assert!(ws_message(&connected, "s1", Dialect::Native).is_none());
    }

    #[test]
    fn options_become_query_parameters() {
        let options = json!({"states": ["running", "pending"], "exclude_samples": false, "last_event_id": 5, "user": null});
        let Value::Object(options) = options else {
            unreachable!()
        };
        let params = option_params(options, JOBS_OPTIONS).unwrap();
        assert_eq!(params["states"], "running,pending");
        assert_eq!(params["exclude_samples"], "false");
        assert_eq!(params["last_event_id"], "5");
        assert!(!params.contains_key("user"));
        let Value::Object(bad) = json!({"colour": "red"}) else {
            unreachable!()
        };
        assert!(option_params(bad, JOBS_OPTIONS)
            .unwrap_err()
            .contains("colour"));
    }

    /// A connection whose peer never answers is closed after `dead_after`; one that keeps
    /// answering pings stays open. Runs the real handler in-process with short intervals.
    #[tokio::test]
    async fn dead_peers_are_closed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ws.db").display());
        let store = crate::store::Store::connect(&url).await.unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let events = crate::events::EventFeed::start(store.clone(), 16, stopped.clone())
            .await
            .unwrap();
        let state = AppState {
            store,
            tokens: None,
            events,
            shutdown: stopped,
            tickets: Default::default(),
            streams: Default::default(),
            allowed_origins: Default::default(),
            metrics: Default::default(),
            metrics_token: None,
            slurm_health: None,
            report_grace: crate::report_events::DEFAULT_GRACE,
        };
        let heartbeat = Heartbeat {
            ping_every: Duration::from_millis(100),
            dead_after: Duration::from_millis(300),
        };
        use warp::Filter;
        let route = warp::ws().map(move |ws: Ws| {
            let state = state.clone();
            ws.on_upgrade(move |socket| {
                serve(socket, state, Identity::Open, heartbeat, Dialect::Native)
            })
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(warp::serve(route).incoming(listener).run());
        use tokio_tungstenite::tungstenite::Message as Frame;

        // Silent peer: reads nothing, so answers no ping, for longer than dead_after.
        let (mut silent, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        // It gets the pings sent before the deadline, then the connection ends (as a Close
        // frame or, since the client's late pongs hit a closed socket, as a write error).
        loop {
            match tokio::time::timeout(Duration::from_secs(2), silent.next()).await {
                Ok(Some(Ok(Frame::Ping(_)))) => {}
                Ok(Some(Ok(Frame::Close(_)) | Err(_)) | None) => break,
                Ok(Some(Ok(other))) => panic!("a silent peer got {other:?}"),
                Err(_) => panic!("a dead peer's connection was not closed"),
            }
        }

        // Answering peer: reading makes the client pong each ping; still open after 3x dead_after.
        let (mut alive, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let until = Instant::now() + Duration::from_millis(900);
        let mut pings = 0;
        loop {
            match tokio::time::timeout_at(until, alive.next()).await {
                Ok(Some(Ok(Frame::Ping(_)))) => pings += 1,
                Ok(other) => panic!("a live peer got {other:?}"),
                Err(_) => break,
            }
        }
        assert!(pings >= 5, "pings every 100 ms, saw {pings}");
        alive.send(Frame::text(r#"{"type":"ping"}"#)).await.unwrap();
        let pong = loop {
            match alive.next().await.unwrap().unwrap() {
                Frame::Ping(_) => continue,
                other => break other,
            }
        };
        assert_eq!(pong.to_text().unwrap(), r#"{"type":"pong"}"#);
    }
}
