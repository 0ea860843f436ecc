//! The HTTP API: routes, the state they share, and how requests are logged.
//!
//! Every route matches path and method first, then authentication, then headers and body, so an
//! unknown path is a 404, a known path with the wrong method a 405, and both are rendered by the
//! one rejection handler in [`error`]. Handlers turn their own errors into responses, so a
//! handler's failure never falls through to another route.

pub mod allow;
pub mod auth;
pub mod connections;
mod cors;
mod dialects;
pub mod error;
mod health;
pub mod hooks;
pub mod identity;
mod jobs;
pub mod jwt;
mod log_dialects;
mod log_stream;
pub mod logs;
pub mod metrics;
mod nodes;
mod openapi;
mod partitions;
pub mod reports;
pub mod request;
mod rollups;
pub mod route_table;
mod samples;
pub mod socket;
pub mod stream;
mod stream_filter;
mod ws;

use crate::store::Store;
use auth::{require, Role, Tokens};
use std::convert::Infallible;
use warp::filters::BoxedFilter;
use warp::http::header::HeaderValue;
use warp::reply::Response;
use warp::Filter;

/// What every handler can reach; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub tokens: Option<Tokens>,
    /// Committed events, for the streams.
    pub events: crate::events::EventFeed,
    /// Turns true when the server shuts down; open streams end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Stream tickets issued and not yet used.
    pub tickets: auth::Tickets,
    /// Open stream connections.
    pub streams: stream::StreamRegistry,
    /// Origins allowed to open WebSockets besides the server's own host (`--allowed-origins`).
    pub allowed_origins: std::sync::Arc<[String]>,
    /// The Prometheus export: snapshot and service counters.
    pub metrics: crate::metrics::Metrics,
    /// A token that may read `/metrics` only (`--metrics-token`), besides reader tokens.
    pub metrics_token: Option<std::sync::Arc<str>>,
    /// Under `--scheduler slurm`: whether slurmrestd answers (`GET /v1/health` degrades).
    pub slurm_health: Option<crate::scheduler::slurm::SlurmHealth>,
    /// How long after a job's end its `job_report` is due (`crate::report_events`): a single
    /// job's stream waits that long (and a margin) for it before closing.
    pub report_grace: std::time::Duration,
}

impl AppState {
    /// This state for a read-only request: its store reads from the read replica when one is
    /// configured (`--database-read-url`, see [`Store::reader`]).
    pub fn for_reads(self) -> AppState {
        AppState {
            store: self.store.reader(),
            ..self
        }
    }
}

pub fn with_state(
    state: AppState,
) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Adds the `X-Correlation-Id` response header.
pub(crate) fn with_correlation(mut response: Response, correlation_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(correlation_id) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

const READ: &[Role] = &[Role::Reader];
/// Admin only.
const WRITE: &[Role] = &[];
const HOOK: &[Role] = &[Role::Hook];
const SAMPLE: &[Role] = &[Role::Agent];
/// Readers, and agents learning which jobs run on their node.
const NODE_JOBS: &[Role] = &[Role::Reader, Role::Agent];

/// All routes, with rejections rendered as JSON errors and every request traced.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let tokens = state.tokens.clone();
    let tickets = state.tickets.clone();
    let origins = state.allowed_origins.clone();
    let preflight_origins = state.allowed_origins.clone();
    let metrics = state.metrics.clone();
    let metrics_auth = auth::require_metrics(tokens.clone(), state.metrics_token.clone());
    let (state_for_reports, tokens_for_reports) = (state.clone(), tokens.clone());
    let st = move || with_state(state.clone());
    let stream_tokens = tokens.clone();
    let user_tokens = tokens.clone();
    let actor_tokens = tokens.clone();
    // Writes: roles only, and the identity goes into the audit row.
    let actor = move |roles: &'static [Role]| auth::require_role(actor_tokens.clone(), roles);
    let auth = move |roles: &'static [Role]| require(tokens.clone(), roles);
    // Routes users may call too; the handler gets the identity and scopes what it answers.
    let who = move || auth::identify(user_tokens.clone(), READ);
    let users_too = {
        let who = who.clone();
        move || who().map(|_| ()).untuple_one().boxed()
    };
    let stream_auth = move || auth::require_stream(stream_tokens.clone(), tickets.clone(), READ);
    let whoami = warp::path!("v1" / "whoami")
        .and(warp::get())
        .and(who())
        .and(st())
        .map(|who: auth::Identity, state: AppState| {
            let see_all = state.tokens.as_ref().is_some_and(|t| t.users_see_all_jobs);
            warp::Reply::into_response(warp::reply::json(&who.describe(see_all)))
        })
        .boxed();
    use request::{audit_headers, correlation_id, json_body, json_body_limited, query_map};

    let health = warp::path!("v1" / "health")
        .and(warp::get())
        .and(st())
        .then(health::health)
        .boxed();

    let openapi = warp::path!("v1" / "openapi.yaml")
        .and(warp::get())
        .and(users_too())
        .map(openapi::document)
        .boxed();

    let job_started = warp::path!("v1" / "events" / "job-started")
        .and(warp::post())
        .and(actor(HOOK))
        .and(correlation_id())
        .and(json_body())
        .and(st())
        .then(hooks::job_started)
        .boxed();

    let job_finished = warp::path!("v1" / "events" / "job-finished")
        .and(warp::post())
        .and(actor(HOOK))
        .and(correlation_id())
        .and(json_body())
        .and(st())
        .then(hooks::job_finished)
        .boxed();

    let list_jobs = warp::path!("v1" / "jobs")
        .and(warp::get())
        .and(who())
        .and(query_map())
        .and(st())
        .then(jobs::list)
        .boxed();

    let create_job = warp::path!("v1" / "jobs")
        .and(warp::post())
        .and(actor(WRITE))
        .and(audit_headers())
        .and(json_body())
        .and(st())
        .then(jobs::create)
        .boxed();

    let get_job = warp::path!("v1" / "jobs" / String)
        .and(warp::get())
        .and(who())
        .and(st())
        .then(jobs::get)
        .boxed();

    let patch_job = warp::path!("v1" / "jobs" / String)
        .and(warp::patch())
        .and(actor(WRITE))
        .and(audit_headers())
        .and(json_body())
        .and(st())
        .then(jobs::patch)
        .boxed();

    let delete_job = warp::path!("v1" / "jobs" / String)
        .and(warp::delete())
        .and(actor(WRITE))
        .and(audit_headers())
        .and(st())
        .then(jobs::delete)
        .boxed();

    let list_samples = warp::path!("v1" / "jobs" / String / "metrics")
        .and(warp::get())
        .and(who())
        .and(query_map())
        .and(st())
        .then(jobs::list_samples)
        .boxed();

    let add_sample = warp::path!("v1" / "jobs" / String / "metrics")
        .and(warp::post())
        .and(auth(SAMPLE))
        .and(audit_headers())
        .and(json_body())
        .and(st())
        .then(jobs::add_sample)
        .boxed();

    let audit_trail = warp::path!("v1" / "jobs" / String / "audit")
        .and(warp::get())
        .and(who())
        .and(st())
        .then(jobs::audit_trail)
        .boxed();

    let ingest_samples = warp::path!("v1" / "samples")
        .and(warp::post())
        .and(auth(SAMPLE))
        .and(json_body_limited(samples::MAX_BATCH_BYTES))
        .and(st())
        .then(samples::ingest)
        .boxed();

    let list_nodes = warp::path!("v1" / "nodes")
        .and(warp::get())
        .and(users_too())
        .and(query_map())
        .and(st())
        .then(nodes::list)
        .boxed();

    let get_node = warp::path!("v1" / "nodes" / String)
        .and(warp::get())
        .and(users_too())
        .and(st())
        .then(nodes::get)
        .boxed();

    let node_jobs = warp::path!("v1" / "nodes" / String / "jobs")
        .and(warp::get())
        .and(auth(NODE_JOBS))
        .and(query_map())
        .and(st())
        .then(nodes::jobs)
        .boxed();

    let list_partitions = warp::path!("v1" / "partitions")
        .and(warp::get())
        .and(users_too())
        .and(query_map())
        .and(st())
        .then(partitions::list)
        .boxed();

    let get_partition = warp::path!("v1" / "partitions" / String)
        .and(warp::get())
        .and(users_too())
        .and(st())
        .then(partitions::get)
        .boxed();

    let stream_jobs = warp::path!("v1" / "stream" / "jobs")
        .and(warp::get())
        .and(stream_auth())
        .and(query_map())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(st())
        .then(stream::jobs)
        .boxed();

    let stream_job = warp::path!("v1" / "stream" / "jobs" / String)
        .and(warp::get())
        .and(stream_auth())
        .and(query_map())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(st())
        .then(stream::job)
        .boxed();

    let stream_cluster = warp::path!("v1" / "stream" / "cluster")
        .and(warp::get())
        .and(stream_auth())
        .and(query_map())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(st())
        .then(stream::cluster)
        .boxed();

    let stream_nodes = warp::path!("v1" / "stream" / "nodes")
        .and(warp::get())
        .and(stream_auth())
        .and(query_map())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(st())
        .then(stream::nodes)
        .boxed();

    let stream_partitions = warp::path!("v1" / "stream" / "partitions")
        .and(warp::get())
        .and(stream_auth())
        .and(query_map())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(st())
        .then(stream::partitions)
        .boxed();

    let stream_ticket = warp::path!("v1" / "stream" / "tickets")
        .and(warp::post())
        .and(who())
        .and(st())
        .then(stream::ticket)
        .boxed();

    // The WebSocket routes: ours, seed 000's and seed 001's (see `dialects`).
    let ws_route = |path: BoxedFilter<()>, dialect: dialects::Dialect| {
        path.and(warp::get())
            .and(stream_auth())
            .and(query_map())
            .and(warp::header::optional::<String>("origin"))
            .and(warp::header::optional::<String>("host"))
            .and(warp::ws())
            .and(st())
            .then(move |who, params, origin, host, ws, state| {
                ws::upgrade(dialect, who, params, origin, host, ws, state)
            })
            .boxed()
    };
    let websocket = ws_route(warp::path!("v1" / "ws").boxed(), dialects::Dialect::Native);
    let seed_websocket = ws_route(warp::path!("ws").boxed(), dialects::Dialect::Seed000);
    let cluster_websocket = ws_route(
        warp::path!("ws" / "cluster").boxed(),
        dialects::Dialect::Cluster,
    );

    // Seed 000's SSE route: `/events?stream=jobs|nodes|partitions`.
    let seed_events = warp::path!("events")
        .and(warp::get())
        .and(stream_auth())
        .and(query_map())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(st())
        .then(dialects::events)
        .boxed();

    let stream_status = warp::path!("v1" / "stream" / "status")
        .and(warp::get())
        .and(auth(WRITE))
        .and(st())
        .then(stream::status)
        .boxed();

    // The live streams, boxed as one filter: the whole chain's type would otherwise outgrow
    // the compiler's query depth.
    let streams = stream_jobs
        .or(stream_job)
        .unify()
        .or(stream_cluster)
        .unify()
        .or(stream_nodes)
        .unify()
        .or(stream_partitions)
        .unify()
        .or(stream_ticket)
        .unify()
        .or(stream_status)
        .unify()
        .or(websocket)
        .unify()
        .or(seed_websocket)
        .unify()
        .or(cluster_websocket)
        .unify()
        .or(seed_events)
        .unify()
        .boxed();

    let reports = reports::routes(state_for_reports.clone(), tokens_for_reports.clone());
    let job_logs = logs::routes(state_for_reports.clone());
    let seed_logs = log_dialects::routes(state_for_reports.clone());

    let prometheus = warp::path!("metrics")
        .and(warp::get())
        .and(metrics_auth)
        .and(st())
        .then(self::metrics::scrape)
        .boxed();

    let api = health
        .or(prometheus)
        .unify()
        .or(whoami)
        .unify()
        .or(openapi)
        .unify()
        .or(job_started)
        .unify()
        .or(job_finished)
        .unify()
        .or(list_jobs)
        .unify()
        .or(create_job)
        .unify()
        .or(get_job)
        .unify()
        .or(patch_job)
        .unify()
        .or(delete_job)
        .unify()
        .or(list_samples)
        .unify()
        .or(add_sample)
        .unify()
        .or(audit_trail)
        .unify()
        .or(reports)
        .unify()
        .or(job_logs)
        .unify()
        .or(seed_logs)
        .unify()
        .or(ingest_samples)
        .unify()
        .or(list_nodes)
        .unify()
        .or(get_node)
        .unify()
        .or(node_jobs)
        .unify()
        .or(list_partitions)
        .unify()
        .or(get_partition)
        .unify()
        .or(streams)
        .unify()
        .recover(error::handle_rejection)
        .unify()
        // Boxed so the wrapper below does not nest the whole route tree's type once more.
        .boxed();

    // A CORS preflight from a browser page on another origin (see `cors`).
    let preflight = warp::options()
        .and(warp::header::<String>("origin"))
        .and(warp::header::<String>("access-control-request-method"))
        .and(warp::path::full())
        .map(
            move |origin: String, _method: String, path: warp::path::FullPath| {
                cors::preflight(&preflight_origins, &origin, path.as_str())
            },
        )
        .boxed();
    let api = preflight.or(api).unify().boxed();

    // Every request, rejected ones included, counted under its route template.
    warp::any()
        .map(std::time::Instant::now)
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::optional::<String>("origin"))
        .and(api)
        .map(
            move |started: std::time::Instant,
                  method: warp::http::Method,
                  path: warp::path::FullPath,
                  origin: Option<String>,
                  response: Response| {
                let response = allow::add_allow(&method, path.as_str(), response);
                let response = cors::decorate(&origins, origin.as_deref(), response);
                self::metrics::observe(&metrics, started, &method, path.as_str(), &response);
                response
            },
        )
        .with(warp::trace::request())
        .map(warp::Reply::into_response)
        .boxed()
}
