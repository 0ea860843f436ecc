//! Group commit for the lifecycle hooks. Prologs and epilogs arrive in bursts (a large array
//! job starts hundreds of jobs at once, and every node of a job runs the hooks); committing each
//! event on its own makes every one wait for its own disk flush and, on PostgreSQL, for the
//! event-order lock. Here a few writer tasks take whatever events are waiting, apply them in one
//! transaction, commit once and answer each caller with its own result.
//!
//! Latency is unchanged when events come one at a time (a batch of one); under load a batch
//! costs one flush for many events. A batch that hits a database error is retried event by
//! event, so one bad event cannot fail the others.

use super::{
    observe, postgres, sqlite, Applied, AuditContext, Backend, Database, Finish, SharedObserver,
    StoreError, StoreResult,
};
use crate::domain::Job;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch, Mutex};

/// Most events applied in one transaction.
const MAX_BATCH: usize = 64;
/// Events waiting for a writer before callers are made to wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

/// One lifecycle change.
#[derive(Debug)]
pub enum LifecycleOp {
    /// job-started: insert the job unless it exists.
    Start { job: Box<Job>, audit: AuditContext },
    /// job-finished: move the job to its terminal state unless it is terminal already.
    Finish {
        id: String,
        finish: Finish,
        audit: AuditContext,
    },
}

impl LifecycleOp {
    /// The job the change is about.
    pub(super) fn job_id(&self) -> &str {
        match self {
            LifecycleOp::Start { job, .. } => &job.id,
            LifecycleOp::Finish { id, .. } => id,
        }
    }
}

type Request = (LifecycleOp, oneshot::Sender<StoreResult<Applied>>);

#[derive(Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Request>,
}

impl GroupCommit {
    /// Starts `writers` writer tasks over `backend`; they stop when every handle is dropped.
    /// Each committed transaction's size goes to `observer` once one is set.
    pub(super) fn start(
        backend: Backend,
        writers: usize,
        commits: Arc<watch::Sender<u64>>,
        observer: SharedObserver,
    ) -> GroupCommit {
        let (queue, receiver) = mpsc::channel::<Request>(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        let committed = Committed { commits, observer };
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(backend.clone(), receiver.clone(), committed.clone()));
        }
        GroupCommit { queue }
    }

    pub(super) async fn apply(&self, op: LifecycleOp) -> StoreResult<Applied> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((op, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Who hears of a committed transaction: the event feed's doorbell and the metrics.
#[derive(Clone)]
struct Committed {
    commits: Arc<watch::Sender<u64>>,
    observer: SharedObserver,
}

impl Committed {
    fn batch(&self, events: usize) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
        if let Some(observer) = self.observer.get() {
            observer.lifecycle_batch(events);
        }
    }
}

async fn writer(
    backend: Backend,
    receiver: Arc<Mutex<mpsc::Receiver<Request>>>,
    committed: Committed,
) {
    loop {
        let batch = {
            let mut rx = receiver.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let (ops, replies): (Vec<LifecycleOp>, Vec<_>) = batch.into_iter().unzip();
        tracing::trace!(events = ops.len(), "lifecycle batch");
        match apply(&backend, &ops).await {
            Ok(results) => {
                committed.batch(ops.len());
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(err) if ops.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(err)));
            }
            Err(err) => {
                tracing::warn!(error = %err, events = ops.len(), "lifecycle batch failed; retrying its events one by one");
                for (op, reply) in ops.into_iter().zip(replies) {
                    let result = apply(&backend, std::slice::from_ref(&op))
                        .await
                        .and_then(|mut r| r.pop().ok_or(StoreError::Closed)?);
                    if result.is_ok() {
                        committed.batch(1);
                    }
                    let _ = reply.send(result);
                }
            }
        }
    }
}

async fn apply(backend: &Backend, ops: &[LifecycleOp]) -> StoreResult<Vec<StoreResult<Applied>>> {
    let started = Instant::now();
    let result = match backend {
        Backend::Sqlite(pool) => sqlite::q::apply_lifecycle(pool, ops).await,
        Backend::Postgres(pool) => postgres::q::apply_lifecycle(pool, ops).await,
    };
    // Timed per operation (queue wait included) by `Store`; here only traced.
    observe(None, Database::Primary, "apply_lifecycle", started, &result);
    result
}
