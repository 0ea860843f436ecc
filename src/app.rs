//! The `serve` application: connects the store, seeds demo data, binds the listener, and runs
//! the API and background maintenance until a shutdown signal, then stops in order (stop
//! accepting, finish in-flight requests, stop maintenance, close the database).

use crate::api::{self, AppState};
use crate::config::ServeConfig;
use crate::events::EventFeed;
use crate::scheduler;
use crate::store::Store;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::Filter;

/// How often old samples and events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often samples are rolled up (`store::rollups`).
const ROLLUP_EVERY: Duration = Duration::from_secs(300);

pub struct Application {
    listener: TcpListener,
    state: AppState,
    config: ServeConfig,
    /// Set to true at shutdown: ends streams, the event feed and maintenance.
    stop: watch::Sender<bool>,
}

/// Live events a stream subscriber may fall behind by before it replays from the log.
const FEED_CAPACITY: usize = 4096;
/// How long start-up waits for a read replica to replay the migrations just applied.
const REPLICA_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(30);

impl Application {
    /// Everything that can fail at start-up happens here, before the first request.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        let store = Store::connect_with(&config.database_url, config.db_acquire_timeout)
            .await
            .with_context(|| {
                format!(
                    "cannot open the database ({})",
                    redact_url(&config.database_url)
                )
            })?;
        let store = match &config.database_read_url {
            None => store,
            Some(url) => store
                .with_read_replica(url, config.db_acquire_timeout, REPLICA_CATCH_UP)
                .await
                .with_context(|| format!("cannot use the read replica ({})", redact_url(url)))?,
        };
        tracing::info!(
            backend = store.backend_name(),
            read_replica = store.has_read_replica(),
            "database ready"
        );
        let metrics = crate::metrics::Metrics::new(config.metrics.options.clone());
        store.observe_with(metrics.storage());
        if config.demo {
            let created = scheduler::demo::seed(&store)
                .await
                .context("seeding demo data failed")?;
            tracing::info!(
                created,
                total = scheduler::demo::JOB_COUNT,
                "demo cluster seeded"
            );
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        api::socket::tune_listener(&listener, config.client_stall_timeout)
            .context("cannot set the listener's socket options")?;
        if config.tokens.is_none() {
            tracing::warn!(
                "no --tokens-file: the API accepts requests without authentication; \
                 anyone who can reach {} can change jobs",
                config.listen
            );
        }
        store
            .logs()
            .set_max_bytes(i64::try_from(config.log_max_bytes_per_job).unwrap_or(i64::MAX));
        let (stop, stopped) = watch::channel(false);
        let events = EventFeed::start(store.clone(), FEED_CAPACITY, stopped.clone())
            .await
            .context("cannot read the event log")?;
        crate::metrics::feed::start(metrics.clone(), store.clone(), &events, stopped.clone())
            .await
            .context("cannot load the metrics snapshot")?;
        let state = AppState {
            store,
            tokens: config.tokens.clone(),
            events,
            shutdown: stopped,
            tickets: Default::default(),
            streams: Default::default(),
            allowed_origins: config.allowed_origins.clone().into(),
            metrics,
            metrics_token: config.metrics.token.clone().map(|t| t.0),
            slurm_health: config.slurm.as_ref().map(|_| Default::default()),
            report_grace: config.report_grace,
        };
        Ok(Application {
            listener,
            state,
            config,
            stop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let pruner = tokio::spawn(prune_loop(
            self.state.store.clone(),
            self.config.retention,
            self.config.rollup_retention,
            self.stop.subscribe(),
        ));
        let reconciler = self.config.slurm.clone().map(|cfg| {
            tokio::spawn(scheduler::slurm::reconcile::run(
                cfg,
                self.state.store.clone(),
                self.state.slurm_health.clone().unwrap_or_default(),
                self.stop.subscribe(),
            ))
        });

        let collector = self.config.collect.clone().map(|c| {
            tokio::spawn(crate::agent::collect_in_process(
                self.state.store.clone(),
                c.sampler,
                c.gpu,
                self.state.metrics.clone(),
                self.stop.subscribe(),
            ))
        });
        let demo = self.config.demo.then(|| {
            tokio::spawn(scheduler::demo::run(
                self.state.store.clone(),
                self.config.demo_speed,
                self.stop.subscribe(),
            ))
        });
        let reporter = tokio::spawn(crate::report_events::run(
            self.state.store.clone(),
            self.state.events.clone(),
            self.config.report_grace,
            self.stop.subscribe(),
        ));
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "jobscope serving");
        // Streams never end on their own: tell them to close as soon as shutdown starts, so
        // the graceful shutdown does not wait for them.
        let stop = self.stop.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop.send(true);
        };
        let routes = if self.config.console {
            // The console's few paths first; everything else is the API's (404s included).
            crate::console::routes()
                .or(api::routes(self.state.clone()))
                .unify()
                .boxed()
        } else {
            api::routes(self.state.clone())
        };
        api::connections::serve(
            self.listener,
            routes,
            api::connections::fit_to_open_files(self.config.connections),
            shutdown,
        )
        .await;
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(10), pruner)
            .await
            .is_err()
        {
            tracing::warn!("retention pruning did not stop within 10 s");
        }
        if tokio::time::timeout(Duration::from_secs(10), reporter)
            .await
            .is_err()
        {
            tracing::warn!("the job report scheduler did not stop within 10 s");
        }
        if let Some(collector) = collector {
            // A pass in flight finishes its store write; sampling itself never blocks shutdown
            // for longer than one pass.
            if tokio::time::timeout(Duration::from_secs(10), collector)
                .await
                .is_err()
            {
                tracing::warn!("the in-process collector did not stop within 10 s");
            }
        }
        if let Some(task) = demo {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("the demo cluster did not stop within 10 s");
            }
        }
        if let Some(task) = reconciler {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("the Slurm reconciler did not stop within 10 s");
            }
        }
        // The feed reads the log after every commit: let it end before the pool closes, or its
        // last read fails on the closed pool (and says so).
        if tokio::time::timeout(Duration::from_secs(10), self.state.events.stopped())
            .await
            .is_err()
        {
            tracing::warn!("the event feed did not stop within 10 s");
        }
        self.state.store.close().await;
        Ok(())
    }
}

/// Creates the event log's partitions ahead (`store::partitions`) and rolls samples up every
/// [`ROLLUP_EVERY`], and applies retention at start and then every
/// [`PRUNE_EVERY`] (rollups first, see `Store::retire`), packing closed days after each, until
/// told to stop. One task, so a rollup pass, a prune and packing never run at once.
async fn prune_loop(
    store: Store,
    retention: Duration,
    rollup_retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(ROLLUP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut pruned_at: Option<tokio::time::Instant> = None;
    let days = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(7));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = crate::domain::now_micros();
        let before = now - days(retention);
        maintain_partitions(&store, now).await;
        if pruned_at.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            if let Err(err) = store.roll_up(now).await {
                tracing::warn!(error = %err, "rolling up samples failed; will retry");
            }
            pack_closed_hours(&store, now).await;
            continue;
        }
        pruned_at = Some(tokio::time::Instant::now());
        let thresholds = crate::domain::report::Thresholds::site();
        match store
            .retire(before, now - days(rollup_retention), thresholds)
            .await
        {
            Ok(r) if r.samples + r.events + r.rollups > 0 || r.archived_jobs > 0 => {
                tracing::info!(samples = r.samples, events = r.events, rollups = r.rollups,
                    archived_jobs = r.archived_jobs, horizon = ?r.horizon, "pruned data past retention")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "retention pruning failed; will retry"),
        }
        // Job output goes with its job's samples: streams of jobs that ended before `before`.
        match store.prune_logs(before).await {
            Ok(0) => {}
            Ok(streams) => tracing::info!(streams, %before, "pruned job output past retention"),
            Err(err) => tracing::warn!(error = %err, "pruning job output failed; will retry"),
        }
        pack_closed_hours(&store, now).await;
    }
}

/// Creates the coming day partitions of the event log and the sample packs and files the rows
/// their default partitions caught (`store::partitions`; nothing on SQLite), saying what it did.
async fn maintain_partitions(store: &Store, now: chrono::DateTime<chrono::Utc>) {
    match store.maintain_partitions(now).await {
        Ok(u) if u.moved > 0 => tracing::warn!(
            created = ?u.created,
            moved = u.moved,
            "moved rows that had no day partition (event log, sample packs) into their own"
        ),
        Ok(u) if !u.created.is_empty() => {
            tracing::info!(created = ?u.created, "created day partitions ahead")
        }
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(error = %err, "maintaining day partitions failed; will retry")
        }
    }
}

/// Packs the sample rows of closed hours (`store::sample_packs`), saying what it did.
async fn pack_closed_hours(store: &Store, now: chrono::DateTime<chrono::Utc>) {
    let started = std::time::Instant::now();
    let thresholds = crate::domain::report::Thresholds::site();
    match store.pack_closed_hours(now, thresholds).await {
        Ok(p) if p.samples + p.digests > 0 => tracing::info!(
            samples = p.samples,
            packs = p.packs,
            digests_filled = p.digests,
            took_ms = started.elapsed().as_millis() as u64,
            "packed the samples of closed hours"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "packing samples failed; will retry"),
    }
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            super::redact_url("sqlite://jobscope.db"),
            "sqlite://jobscope.db"
        );
    }
}
