//! The seeds' stream dialects, as aliases of ours (which stay the documented form):
//! `GET /events?stream=jobs|nodes|partitions` (seed 000's SSE route), `GET /ws` (seed 000's
//! WebSocket: `{stream, options}` subscribes, events arrive as `{"type": "event", ...}`) and
//! `GET /ws/cluster` (seed 001: subscribed at once to the job changes and a `status` every 5 s;
//! `subscribe` with `data` flags picks among them, a bare `unsubscribe` stops everything).
//!
//! Only the framing differs: every one of them runs the same pumps as `/v1/stream/*` and
//! `/v1/ws`, so replay, `reset`, slow clients and shutdown behave the same.

use super::error::ApiError;
use super::identity::Identity;
use super::stream;
use super::AppState;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use warp::reply::{Reply, Response};

/// Which client dialect a WebSocket connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `/v1/ws`: our messages and envelope.
    Native,
    /// `/ws` (seed 000): events framed as `{"type": "event", "event_type": <ours>, ...}`,
    /// errors with an `error` field.
    Seed000,
    /// `/ws/cluster` (seed 001): the cluster stream subscribed at open; `data` flags.
    Cluster,
}

/// `GET /events?stream=jobs|nodes|partitions` (seed 000): the matching `/v1/stream/*` route
/// with the other parameters as its filters. `stream` defaults to `jobs`.
pub async fn events(
    who: Identity,
    mut params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    let name = params.remove("stream");
    match name.as_deref().map(str::trim) {
        None | Some("") | Some("jobs") => stream::jobs(who, params, last_event_id, state).await,
        Some("nodes") => stream::nodes(who, params, last_event_id, state).await,
        Some("partitions") => stream::partitions(who, params, last_event_id, state).await,
        Some(other) => ApiError::Validation(format!(
            "Invalid stream {other:?} (expected jobs, nodes or partitions)"
        ))
        .into_response(),
    }
}

/// What a WebSocket client asked for, in any dialect.
#[derive(Debug, PartialEq)]
pub(super) enum Request {
    Subscribe {
        stream: String,
        options: Map<String, Value>,
    },
    Unsubscribe(String),
    /// Seed 001's bare `unsubscribe`: every subscription of the connection.
    UnsubscribeAll,
    /// Seed 001's `subscribe` with `data` flags.
    Flags(ClusterFlags),
    Ping,
}

/// Seed 001's subscription flags, as they map onto jobscope: `status` is the periodic cluster
/// status, `state_changes` the job changes. Its other flags name things jobscope does not have
/// (Raft latency, uptime, snapshots, custom metrics, peers); they are accepted and, when
/// `true`, listed back as unsupported rather than silently dropped.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ClusterFlags {
    pub(super) status: bool,
    pub(super) state_changes: bool,
    pub(super) unsupported: Vec<String>,
}

impl ClusterFlags {
    /// Seed 001's default: everything.
    pub(super) const ALL: ClusterFlags = ClusterFlags {
        status: true,
        state_changes: true,
        unsupported: Vec::new(),
    };

    fn parse(data: &Map<String, Value>) -> Result<ClusterFlags, String> {
        const UNSUPPORTED: &[&str] = &[
            "latency",
            "uptime",
            "snapshot",
            "custom_metrics",
            "peer_changes",
        ];
        // Absent flags keep seed 001's default (subscribed).
        let mut flags = ClusterFlags::ALL;
        for (key, value) in data {
            let Some(on) = value.as_bool() else {
                return Err(format!("subscription flag {key:?} must be true or false"));
            };
            match key.as_str() {
                "status" => flags.status = on,
                "state_changes" => flags.state_changes = on,
                other if UNSUPPORTED.contains(&other) => {
                    if on {
                        flags.unsupported.push(other.to_owned());
                    }
                }
                other => {
                    return Err(format!(
                        "unknown subscription flag {other:?} (expected status, state_changes; \
                         accepted but not streamed: {})",
                        UNSUPPORTED.join(", ")
                    ))
                }
            }
        }
        Ok(flags)
    }

    /// The flags as the ack shows them.
    pub(super) fn describe(&self) -> Value {
        json!({
            "status": self.status,
            "state_changes": self.state_changes,
            "unsupported": self.unsupported,
        })
    }
}

/// Reads one client message: ours (`{"type": "subscribe", "stream", "options"}`,
/// `unsubscribe` with a `subscription`, `ping`), seed 000's `{stream, options}` without a
/// type, seed 001's `subscribe` with `data` flags (on `/ws/cluster` only) and its bare
/// `unsubscribe`. Unknown fields are refused, so a misspelt key is an error, not a no-op.
pub(super) fn parse_request(text: &str, dialect: Dialect) -> Result<Request, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|err| format!("invalid message: {err}"))?;
    let Value::Object(mut message) = value else {
        return Err("invalid message: expected a JSON object".into());
    };
    let kind = match message.remove("type") {
        None if message.contains_key("stream") => "subscribe".to_owned(),
        None => return Err("invalid message: missing field `type`".into()),
        Some(Value::String(kind)) => kind,
        Some(_) => return Err("invalid message: `type` must be a string".into()),
    };
    let request = match kind.as_str() {
        "ping" => Request::Ping,
        "subscribe" => match take_string(&mut message, "stream")? {
            Some(stream) => {
                let options = match message.remove("options") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(options)) => options,
                    Some(_) => return Err("invalid message: `options` must be an object".into()),
                };
                Request::Subscribe { stream, options }
            }
            None if dialect == Dialect::Cluster => {
                let data = match message.remove("data") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(data)) => data,
                    Some(_) => return Err("invalid message: `data` must be an object".into()),
                };
                Request::Flags(ClusterFlags::parse(&data)?)
            }
            None => return Err("invalid message: missing field `stream`".into()),
        },
        "unsubscribe" => match take_string(&mut message, "subscription")? {
            Some(id) => Request::Unsubscribe(id),
            None => Request::UnsubscribeAll,
        },
        other => {
            return Err(format!(
                "invalid message: unknown type {other:?} (expected subscribe, unsubscribe or ping)"
            ))
        }
    };
    if let Some(extra) = message.keys().next() {
        return Err(format!("invalid message: unknown field `{extra}`"));
    }
    Ok(request)
}

fn take_string(message: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match message.remove(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("invalid message: `{key}` must be a string")),
    }
}

/// A stream message framed for `dialect`. Seed 000's clients switch on `type` being `event`,
/// `error` or `stream_closed`: a logged event keeps its own type as `event_type`.
pub(super) fn frame(message: &stream::Outgoing, subscription: &str, dialect: Dialect) -> String {
    let native = message.ws_text(subscription);
    if dialect != Dialect::Seed000 {
        return native;
    }
    let is_logged = matches!(
        message.name,
        "job_event" | "job_sample" | "node_event" | "partition_event"
    );
    if !is_logged {
        return native;
    }
    let Ok(Value::Object(mut envelope)) = serde_json::from_str::<Value>(&native) else {
        return native;
    };
    if let Some(kind) = envelope.insert("type".into(), Value::from("event")) {
        envelope.insert("event_type".into(), kind);
    }
    Value::Object(envelope).to_string()
}

/// An error message for `dialect`: ours carries `message`; seed 000's clients read `error`.
pub(super) fn error_message(message: &str, dialect: Dialect) -> Value {
    match dialect {
        Dialect::Seed000 => json!({"type": "error", "message": message, "error": message}),
        _ => json!({"type": "error", "message": message}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn each_dialect_is_read() {
        let native = r#"{"type":"subscribe","stream":"jobs","options":{"user":"a"}}"#;
        let seed000 = r#"{"stream":"jobs","options":{"user_id":"a"}}"#;
        assert_eq!(
            parse_request(native, Dialect::Native).unwrap(),
            Request::Subscribe {
                stream: "jobs".into(),
                options: options(json!({"user": "a"}))
            }
        );
        assert_eq!(
            parse_request(seed000, Dialect::Seed000).unwrap(),
            Request::Subscribe {
                stream: "jobs".into(),
                options: options(json!({"user_id": "a"}))
            }
        );
        let flags =
            r#"{"type":"subscribe","data":{"status":false,"latency":true,"state_changes":true}}"#;
        assert_eq!(
            parse_request(flags, Dialect::Cluster).unwrap(),
            Request::Flags(ClusterFlags {
                status: false,
                state_changes: true,
                unsupported: vec!["latency".into()],
            })
        );
        assert!(parse_request(flags, Dialect::Native).is_err());
        assert_eq!(
            parse_request(r#"{"type":"unsubscribe"}"#, Dialect::Cluster).unwrap(),
            Request::UnsubscribeAll
        );
        assert_eq!(
            parse_request(
                r#"{"type":"unsubscribe","subscription":"s2"}"#,
                Dialect::Native
            )
            .unwrap(),
            Request::Unsubscribe("s2".into())
        );
        for bad in [
            "[]",
            "{}",
            r#"{"type":"subscribe","stream":"jobs","colour":1}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"subscribe","data":{"status":"yes"}}"#,
            r#"{"type":"subscribe","data":{"gossip":true}}"#,
            r#"{"stream":7}"#,
        ] {
            assert!(parse_request(bad, Dialect::Cluster).is_err(), "{bad}");
        }
    }

    #[test]
    fn seed000_frames_events_as_event() {
        let message = stream::Outgoing {
            id: 3,
            name: "job_event",
            json: r#"{"type":"job_created","stream":"jobs","data":{"a":1}}"#.into(),
        };
        let framed: Value = serde_json::from_str(&frame(&message, "s1", Dialect::Seed000)).unwrap();
        assert_eq!(framed["type"], "event");
        assert_eq!(framed["event_type"], "job_created");
        assert_eq!(framed["data"]["a"], 1);
        assert_eq!(framed["id"], 3);
        let native: Value = serde_json::from_str(&frame(&message, "s1", Dialect::Native)).unwrap();
        assert_eq!(native["type"], "job_created");
        let closed = stream::Outgoing {
            id: 3,
            name: "stream_closed",
            json: r#"{"type":"stream_closed","stream":"job","data":{}}"#.into(),
        };
        let framed: Value = serde_json::from_str(&frame(&closed, "s1", Dialect::Seed000)).unwrap();
        assert_eq!(framed["type"], "stream_closed");
    }
}
