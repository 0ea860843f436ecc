//! Message encoding: a logged event or a control message (`connected`, `reset`, `status`,
//! `stream_closed`, `error`) as the seeds' envelope `{"type", "stream", "data", "timestamp"}`,
//! framed as an SSE event or a WebSocket text. A logged event is encoded once per stream name
//! and shared by every subscriber (see [`FeedEvent::encoded`]).

use super::RETRY_HINT;
use crate::events::{EventKind, FeedEvent};
use serde_json::Value;
use std::sync::Arc;
use warp::sse::Event;

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

pub(super) fn envelope_text(
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
pub(in crate::api) struct Outgoing {
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
    /// A message that is not from the event log (a job's output, for one), enveloped for
    /// `stream` with `id` as its cursor.
    pub(in crate::api) fn control(
        name: &'static str,
        id: i64,
        stream: &str,
        data: &Value,
    ) -> Outgoing {
        Outgoing {
            id,
            name,
            json: envelope_text(name, stream, data, crate::domain::now_micros()).into(),
        }
    }

    pub(super) fn sse(self) -> Event {
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
    pub(in crate::api) fn ws_text(&self, subscription: &str) -> String {
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

pub(super) fn log_event(event: &FeedEvent, stream: &str) -> Outgoing {
    let json = event.encoded(encoding_slot(stream), |e| {
        envelope_text(e.kind.as_str(), stream, &e.payload, e.occurred_at)
    });
    Outgoing {
        id: event.id,
        name: event_name(event.kind),
        json,
    }
}

pub(super) fn control_event(
    name: &'static str,
    cursor: i64,
    stream: &str,
    data: Value,
) -> Outgoing {
    Outgoing::control(name, cursor, stream, &data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredEvent;
    use serde_json::json;

    fn stored(kind: &str, payload: Value) -> FeedEvent {
        FeedEvent::new(StoredEvent {
            id: 9,
            occurred_at: chrono::Utc::now(),
            kind: kind.parse().expect("an event kind"),
            job_id: None,
            payload,
            missing_sample: None,
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
