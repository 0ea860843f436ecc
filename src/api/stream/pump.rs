//! The replay pump: one task per connection that replays the event log after the client's
//! cursor, then forwards live events from the feed, skipping ids it already sent (no gap, no
//! duplicate), and handles a client that lags (see the parent module's doc on slow clients).

use super::encode::{control_event, envelope_text, log_event, Outgoing};
use super::registry::StreamRegistry;
use super::{cluster_status, Subscription};
use crate::api::AppState;
use crate::events::{EventFeed, EventKind, FeedEvent};
use crate::store::Store;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};

/// Log rows read per query while replaying.
const REPLAY_BATCH: i64 = 500;
/// A second lag within this window closes the connection.
const LAG_WINDOW: Duration = Duration::from_secs(60);
/// While a send waits for a client to read, how often the pump checks whether it has lagged.
const LAG_CHECK: Duration = Duration::from_millis(100);
/// Catch-up passes over the log before going live (each pass covers what was committed during
/// the previous one); a client still behind after them is handled as lagging.
const CATCH_UP_PASSES: usize = 3;

/// Where a connection's stream begins.
#[derive(Clone, Copy, Debug)]
pub(in crate::api) enum Start {
    /// After the client's cursor (`Last-Event-ID`, or a subscription's `last_event_id`): the log
    /// is replayed from there, and a cursor past retention gets `reset`.
    After(i64),
    /// After the newest event committed when the client was answered (see [`start_from`]).
    Now(i64),
}

/// Where a stream begins: after the client's `cursor`, or, without one, after the newest
/// committed event. That "now" must be fixed before the client is answered (the SSE response,
/// the WebSocket `subscribed` ack), so an event committed once the client holds that answer is
/// always delivered, never taken for one from before the start.
pub(in crate::api) async fn start_from(state: &AppState, cursor: Option<i64>) -> Start {
    match cursor {
        Some(cursor) => Start::After(cursor),
        None => Start::Now(newest_committed(&state.store, &state.events).await),
    }
}

/// The id of the newest committed event, as far as the log and the feed know (the feed's head
/// may trail the log by a moment, hence the larger of the two).
async fn newest_committed(store: &Store, feed: &EventFeed) -> i64 {
    let head = feed.head();
    store.last_event_id().await.unwrap_or(head).max(head)
}

/// Registers `sub` under `protocol` in the connection registry and returns its pump. The feed
/// is subscribed here, before the pump reads the log, so nothing committed in between is missed.
pub(in crate::api) fn pump_for(
    state: &AppState,
    sub: Subscription,
    protocol: &'static str,
    start: Start,
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
    async fn run(mut self, start: Start, shutdown: watch::Receiver<bool>) {
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
    async fn catch_up(&mut self, start: Start) -> Result<bool, Stop> {
        let (cursor, resumed_from) = match start {
            Start::After(cursor) => (cursor, Some(cursor)),
            Start::Now(newest) => (newest, None),
        };
        self.cursor = cursor;
        let connected =
            json!({ "resumed_from": resumed_from, "filters": self.sub.filter.describe() });
        let stream = self.sub.stream;
        self.send(
            control_event("connected", self.cursor, stream, connected),
            false,
        )
        .await?;

        if resumed_from.is_some() && !cursor_is_retained(&self.store, self.cursor).await {
            let reset = json!({ "reason": "the requested events are no longer retained; refetch state through the REST API" });
            self.cursor = newest_committed(&self.store, &self.feed).await;
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
