//! The event feed: committed changes, in commit order, for everything downstream (streams,
//! metrics). The event log in the database is the data; this module only rings a doorbell after
//! each commit and fans the new log rows out to subscribers, so a subscriber that falls behind or
//! reconnects can always be replayed from the log instead of losing events.
//!
//! Each event is fanned out once, as an `Arc<FeedEvent>`: the text the streams send for it is
//! encoded by the first subscriber that needs it and shared by all the others
//! ([`FeedEvent::encoded`]), so a delivery costs a reference count, not a serialisation.
//!
//! Event ids are handed out in commit order (SQLite has one writer; on PostgreSQL the store takes
//! a transaction lock before appending events), so reading the log by "id greater than the last
//! one seen" after a commit never skips a row.
//!
//! What a row says is typed once, in [`crate::domain::event`] (re-exported here): its
//! [`EventKind`] and the payload type of each kind, which the store writes and every reader reads.

pub use crate::domain::event::{
    EventKind, JobChange, JobReport, JobSample, JobSummary, NodeChange, PartitionChange, Payload,
    SummaryScheduler,
};
use crate::store::{Store, StoredEvent};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Log rows read per query while catching up.
const READ_BATCH: i64 = 500;
/// How often the log is read without a doorbell: picks up commits of other `serve` replicas on
/// the same database until they ring through PostgreSQL NOTIFY.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Least time between two reads of the log. Under a burst of hooks every group-commit batch
/// rings the doorbell (twice on PostgreSQL: in-process and through NOTIFY); waiting this long
/// after a read gathers the commits of the meantime into the next one, instead of a query per
/// commit. Live watchers see events at most this much later.
const READ_GAP: Duration = Duration::from_millis(5);

/// How many encodings of one event are cached (one per stream name that frames it).
pub const ENCODINGS: usize = 5;

/// One committed event as the feed hands it out: the log row, plus its encodings cached for
/// every subscriber (see the module doc). Derefs to the [`StoredEvent`].
#[derive(Debug)]
pub struct FeedEvent {
    event: StoredEvent,
    encoded: [OnceLock<Arc<str>>; ENCODINGS],
}

impl FeedEvent {
    pub fn new(event: StoredEvent) -> FeedEvent {
        FeedEvent {
            event,
            encoded: Default::default(),
        }
    }

    /// The encoding in `slot` (below [`ENCODINGS`]), made by `encode` the first time it is
    /// asked for. Callers give each distinct encoding its own slot.
    pub fn encoded(&self, slot: usize, encode: impl FnOnce(&StoredEvent) -> String) -> Arc<str> {
        self.encoded[slot % ENCODINGS]
            .get_or_init(|| encode(&self.event).into())
            .clone()
    }
}

impl std::ops::Deref for FeedEvent {
    type Target = StoredEvent;
    fn deref(&self) -> &StoredEvent {
        &self.event
    }
}

/// Handle to the running feed; cheap to clone.
#[derive(Clone)]
pub struct EventFeed {
    live: broadcast::Sender<Arc<FeedEvent>>,
    head: watch::Receiver<i64>,
    capacity: usize,
}

impl EventFeed {
    /// Starts the fan-out task from the newest logged event; it stops when `stop` turns true.
    /// `capacity` bounds how many events a slow subscriber may fall behind before it is told it
    /// lagged (it then resumes from the log).
    pub async fn start(
        store: Store,
        capacity: usize,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<EventFeed> {
        let start = store.last_event_id().await?;
        let capacity = capacity.max(1);
        let (live, _) = broadcast::channel(capacity);
        let (head_tx, head) = watch::channel(start);
        let sender = live.clone();
        let mut doorbell = store.commits();
        tokio::spawn(async move {
            let mut cursor = start;
            let mut poll = tokio::time::interval(POLL_EVERY);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    changed = doorbell.changed() => if changed.is_err() { return },
                    _ = poll.tick() => {}
                    _ = stop.changed() => return,
                }
                loop {
                    // A backlog is read a batch at a time: stop between batches, not after.
                    if *stop.borrow() {
                        return;
                    }
                    let batch = match store.events_after(cursor, READ_BATCH).await {
                        Ok(batch) => batch,
                        Err(err) => {
                            tracing::warn!(error = %err, cursor, "event feed could not read the log; will retry");
                            break;
                        }
                    };
                    let full = batch.len() as i64 == READ_BATCH;
                    for event in batch {
                        cursor = event.id;
                        // No receiver is fine: nobody is watching.
                        let _ = sender.send(Arc::new(FeedEvent::new(event)));
                    }
                    let _ = head_tx.send(cursor);
                    if !full {
                        break;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(READ_GAP) => {}
                    _ = stop.changed() => return,
                }
            }
        });
        Ok(EventFeed {
            live,
            head,
            capacity,
        })
    }

    /// Live events from now on. Subscribe *before* reading the log for a catch-up, then skip
    /// live events with an id at or below the last one sent: no gap and no duplicate.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.live.subscribe()
    }

    /// Events a subscriber may fall behind by before it misses some.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `receiver` has fallen so far behind that the feed overwrote events it had not
    /// taken yet (it learns so itself only on its next `recv`).
    pub fn has_lagged(&self, receiver: &broadcast::Receiver<Arc<FeedEvent>>) -> bool {
        receiver.len() > self.capacity
    }

    /// Id of the newest event fanned out so far.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// Resolves once the fan-out task has ended (it ends when `stop` turns true): from then on
    /// the feed reads the store no more, so the store can be closed without a read failing on
    /// the closed pool. The task's end drops the sender of `head`, which is what this waits for.
    pub async fn stopped(&self) {
        let mut head = self.head.clone();
        while head.changed().await.is_ok() {}
    }

    /// Number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::node::tests::capturing_logs;
    use crate::domain::{now_micros, Job, JobState, MetricSample, SampleDetail};
    use crate::store::{AuditContext, LatePolicy, SampleItem};

    /// Shutting down in `serve`'s order (stop, wait for [`EventFeed::stopped`], close the store)
    /// while the feed is still reading a backlog: no read fails on the closed pool.
    #[test]
    fn a_feed_stopped_mid_backlog_reads_nothing_once_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("feed.db").display());
        let ((), logged) = capturing_logs(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = Store::connect(&url).await.unwrap();
                let (stop, stopped) = watch::channel(false);
                let feed = EventFeed::start(store.clone(), 16, stopped).await.unwrap();
                let start = now_micros() - chrono::Duration::hours(2);
                let job = Job::new(
                    "1".into(),
                    "alice".into(),
                    vec!["node-01".into()],
                    JobState::Running,
                    start,
                    "c",
                    "slurm",
                    "api-v1",
                );
                let audit = AuditContext {
                    changed_by: "test".into(),
                    source: "test".into(),
                    correlation_id: "c".into(),
                    actor: None,
                };
                store.create_job(&job, &audit).await.unwrap();
                // A backlog of several read batches, committed before the feed reads any.
                let items: Vec<SampleItem> = (0..READ_BATCH as usize * 6)
                    .map(|i| SampleItem {
                        job_id: "1".into(),
                        sample: MetricSample {
                            timestamp: start + chrono::Duration::seconds(i as i64),
                            cpu_usage: Some(50.0),
                            memory_usage_mb: None,
                            gpu_usage: None,
                            detail: SampleDetail {
                                node: Some("node-01".into()),
                                ..SampleDetail::default()
                            },
                        },
                    })
                    .collect();
                for chunk in items.chunks(1000) {
                    store
                        .ingest_samples(chunk, None, LatePolicy::UntilJobEnd)
                        .await
                        .unwrap();
                }
                // Stop once the feed is into the backlog, with more of it still to read.
                let mut head = feed.head.clone();
                while feed.head() < 1 {
                    head.changed().await.unwrap();
                }
                assert!(
                    feed.head() < items.len() as i64,
                    "the backlog was read in one go"
                );
                let _ = stop.send(true);
                feed.stopped().await;
                store.close().await;
                // A feed still running would try its next read (and fail) in these turns.
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                }
            });
        });
        assert!(!logged.contains("closed pool"), "{logged}");
        assert!(!logged.contains("could not read the log"), "{logged}");
    }
}
