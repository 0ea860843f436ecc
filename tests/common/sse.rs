//! A Server-Sent Events reader for the stream tests: connects (checking the SSE headers) and
//! parses events one at a time, failing a test that waits more than 10 s for one.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use std::pin::Pin;
use std::time::Duration;

pub type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// One parsed SSE event.
#[derive(Debug)]
pub struct Sse {
    pub name: String,
    pub id: Option<i64>,
    pub data: Value,
}

/// Reads SSE events from a response body.
pub struct SseClient {
    body: ByteStream,
    buffer: String,
}

impl SseClient {
    pub async fn connect(base: &str, path: &str, last_event_id: Option<i64>) -> SseClient {
        SseClient::connect_as(base, path, last_event_id, None).await
    }

    /// Like [`SseClient::connect`], with `token` as the bearer token.
    pub async fn connect_as(
        base: &str,
        path: &str,
        last_event_id: Option<i64>,
        token: Option<&str>,
    ) -> SseClient {
        let mut req = super::http().get(format!("{base}{path}"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("stream request");
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        SseClient {
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut id, mut data) = (String::from("message"), None, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (ping) or the retry hint alone
                }
                return Some(Sse {
                    name,
                    id,
                    data: serde_json::from_str(&data).expect("data is JSON"),
                });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")?;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.expect("body chunk")));
        }
    }

    /// The next event other than `connected`.
    pub async fn next_event(&mut self) -> Sse {
        loop {
            let event = self.next().await.expect("stream still open");
            if event.name != "connected" {
                return event;
            }
        }
    }
}
