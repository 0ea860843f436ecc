//! The API's own accept loop and connection settings (instead of `warp::serve`): what a client
//! may hold before it has sent a request, and how many connections it may hold at all.
//!
//! - `--header-read-timeout`: a connection has this long to send a request's headers, counted
//!   from when the connection is ready for its next request, so it also closes a kept-alive
//!   connection left idle that long. hyper's timer does it; streams (SSE, WebSocket) are
//!   answered requests and are never cut by it.
//! - `--max-connections`: past the cap, a new connection is answered `503` with `Retry-After`
//!   and closed, so the open-files limit is not reached by idle clients and `/v1/health` stays
//!   reachable as soon as one of them goes.
//! - hyper answers requests it cannot parse (a URI over 64 KiB, headers too large, a malformed
//!   request line) by itself, with an empty body; [`JsonErrors`] gives those answers the API's
//!   JSON error body.
//! - A connection ending in an error is the client's doing (it hung up, sent garbage, or timed
//!   out): logged at DEBUG, with a rate-limited INFO count, never at ERROR.
//!
//! The listener keeps the socket options of [`super::socket`] (TCP_USER_TIMEOUT and the send
//! buffer), which accepted connections inherit.

use super::error::ApiError;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Default of `--header-read-timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The connection settings of `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ConnectionLimits {
    pub fn from_args(
        args: &crate::cli::LimitsArgs,
    ) -> Result<ConnectionLimits, crate::config::ConfigError> {
        Ok(ConnectionLimits {
            header_read_timeout: crate::config::nonzero(
                args.header_read_timeout,
                "JOBSCOPE_HEADER_READ_TIMEOUT",
            )?,
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        })
    }
}

/// Descriptors kept for everything but client connections: the database pool, the listener,
/// log files, the collector's cgroup files, connections refused past the cap.
const RESERVED_FILES: u64 = 256;

/// Raises the soft open-files limit to the hard one (a default soft limit of 1024 would otherwise
/// cap the server near a thousand idle clients), and lowers the connection cap to what the
/// limit allows, so that past the cap a client is answered 503 rather than left unaccepted.
pub fn fit_to_open_files(limits: ConnectionLimits) -> ConnectionLimits {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct they are given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return limits;
    }
    if rl.rlim_cur < rl.rlim_max {
        let before = rl.rlim_cur;
        let mut raised = rl;
        raised.rlim_cur = if rl.rlim_max == libc::RLIM_INFINITY {
            1 << 20
        } else {
            rl.rlim_max
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl = raised;
        } else {
            tracing::warn!(soft = before, "cannot raise the open-files limit");
        }
    }
    let fit =
        usize::try_from(rl.rlim_cur.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX);
    if fit < limits.max_connections {
        tracing::warn!(
            open_files = rl.rlim_cur,
            max_connections = fit,
            "--max-connections lowered to what the open-files limit allows"
        );
    }
    ConnectionLimits {
        max_connections: limits.max_connections.min(fit),
        ..limits
    }
}

/// Serves `routes` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// the open connections to finish (streams end on the server's own stop signal).
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Connections that have not sent a byte yet close at shutdown instead of holding it up: an
    // HTTP client's pool keeps such connections (hyper opens one while a request waits and
    // pools it unused when an older one frees up first), and they may never speak.
    let (stopping, not_yet_stopping) = tokio::sync::watch::channel(false);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                accept_failed(err).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            OVER_CAP.note(|n| {
                tracing::warn!(
                    refused = n,
                    max_connections = limits.max_connections,
                    "connection cap reached: new connections answered 503 (--max-connections)"
                )
            });
            tokio::spawn(refuse(stream));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes.clone()));
        let watcher = graceful.watcher();
        let mut stopping = not_yet_stopping.clone();
        tokio::spawn(async move {
            // hyper's timer starts once it knows the protocol, that is after the first bytes: a
            // connection that sends nothing at all is closed here.
            let mut first = [0u8; 1];
            let first_bytes = tokio::select! {
                read = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)) => read,
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            match first_bytes {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return,
                Err(_) => {
                    client_error(&FirstByteTimeout);
                    return;
                }
            }
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let io = TokioIo::new(JsonErrors::new(stream));
            let conn = builder.serve_connection_with_upgrades(io, service);
            if let Err(err) = watcher.watch(conn).await {
                client_error(&*err);
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    graceful.shutdown().await;
}

/// A failed `accept`: out of file descriptors is the operator's concern (logged, rate-limited,
/// and the loop pauses briefly so it does not spin); a connection reset before it was accepted
/// is nobody's.
async fn accept_failed(err: io::Error) {
    let out_of_files = matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    if out_of_files {
        ACCEPT_ERRORS.note(|n| {
            tracing::error!(error = %err, failures = n, "cannot accept connections: out of file descriptors (raise the open-files limit or lower --max-connections)")
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    } else {
        tracing::debug!(error = %err, "accept failed");
    }
}

/// A connection that sent nothing within the header-read timeout.
#[derive(Debug)]
struct FirstByteTimeout;

impl std::fmt::Display for FirstByteTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("nothing received within the header-read timeout")
    }
}

impl std::error::Error for FirstByteTimeout {}

/// A connection that ended in an error: the client hung up, timed out or sent something
/// unparsable. DEBUG each, INFO once a minute with the count.
fn client_error(err: &(dyn std::error::Error + 'static)) {
    let kind = match err.downcast_ref::<hyper::Error>() {
        Some(e) if e.is_timeout() => "header read timeout",
        Some(e) if e.is_incomplete_message() => "incomplete request",
        Some(e) if e.is_parse() || e.is_parse_status() => "unparsable request",
        Some(e) if e.is_canceled() || e.is_closed() => "closed",
        _ if err.is::<FirstByteTimeout>() => "header read timeout",
        _ => "connection error",
    };
    tracing::debug!(error = %err, kind, "client connection ended with an error");
    CLIENT_ERRORS.note(|n| {
        tracing::info!(
            connections = n,
            last = kind,
            "client connections ended with errors (hang-ups, timeouts, bad requests) since the last report"
        )
    });
}

/// Answers a connection over the cap: reads what the client sends first (briefly, so closing
/// does not reset the connection before the answer is read), then 503 and close.
async fn refuse(mut stream: TcpStream) {
    let answer = error_response(&ApiError::Overloaded);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A whole HTTP/1.1 response carrying `error`'s JSON body, closing the connection.
pub fn error_response(error: &ApiError) -> Vec<u8> {
    let (status, code) = error.status_and_code();
    let body = serde_json::json!({"error": code, "message": error.to_string()}).to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if status == warp::http::StatusCode::SERVICE_UNAVAILABLE {
        head.push_str(&format!(
            "retry-after: {}\r\n",
            super::error::RETRY_AFTER_SECONDS
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The API error for one of hyper's own answers (`HTTP/1.1 414 ` ... with no body), if `head`
/// is one: the API never sends these statuses without a JSON body of its own.
fn hyper_error_answer(head: &[u8]) -> Option<ApiError> {
    let error = if head.starts_with(b"HTTP/1.1 414 ") {
        ApiError::UriTooLong
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        ApiError::HeadersTooLarge
    } else if head.starts_with(b"HTTP/1.1 400 ") {
        ApiError::InvalidRequest("Malformed HTTP request".into())
    } else {
        return None;
    };
    let bodiless = head.windows(19).any(|w| w == b"content-length: 0\r\n")
        && !head
            .windows(13)
            .any(|w| w.eq_ignore_ascii_case(b"content-type:"));
    bodiless.then_some(error)
}

/// The connection's socket, with hyper's bodiless error answers replaced by JSON ones.
pub struct JsonErrors<T> {
    inner: T,
    /// A replacement answer not yet written out, and how much of it is.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonErrors<T> {
    pub fn new(inner: T) -> Self {
        JsonErrors {
            inner,
            pending: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `head` as written when it is one of hyper's error answers, queuing ours instead.
    fn replace(&mut self, head: &[u8]) -> bool {
        match hyper_error_answer(head) {
            Some(error) => {
                self.pending = Some((error_response(&error), 0));
                true
            }
            None => false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        if this.replace(buf) {
            let _ = this.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        // hyper's error answer is a head alone: one non-empty slice.
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next()) {
            if this.replace(only) {
                let n = only.len();
                let _ = this.drain(cx)?;
                return Poll::Ready(Ok(n));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Counts occurrences and logs at most once per [`RateLimited::EVERY`], with the count since the
/// last report.
pub struct RateLimited {
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl RateLimited {
    pub const EVERY: Duration = Duration::from_secs(60);

    pub const fn new() -> Self {
        RateLimited {
            count: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Counts one occurrence; calls `log` with the count when a report is due.
    pub fn note(&self, log: impl FnOnce(u64)) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Self::EVERY);
        if due {
            *last = Some(Instant::now());
            log(self.count.swap(0, Ordering::Relaxed));
        }
    }
}

impl Default for RateLimited {
    fn default() -> Self {
        Self::new()
    }
}

static OVER_CAP: RateLimited = RateLimited::new();
static ACCEPT_ERRORS: RateLimited = RateLimited::new();
static CLIENT_ERRORS: RateLimited = RateLimited::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_error_answers_are_replaced() {
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_error_answer(hyper_414), Some(ApiError::UriTooLong));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_error_answer(ours), None);
        assert_eq!(
            hyper_error_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
    }

    #[test]
    fn rate_limited_logs_once_per_window_with_the_count() {
        let limiter = RateLimited::new();
        let mut reports = Vec::new();
        for _ in 0..5 {
            limiter.note(|n| reports.push(n));
        }
        assert_eq!(
            reports,
            [1],
            "the first occurrence reports at once, the rest wait"
        );
    }
}
