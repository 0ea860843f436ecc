//! The one client of jobscope's own API, used by every command that talks to `serve`
//! (`agent`, `hook`, `watch`, `report`): one way to take `--server`, join a path onto it and
//! authenticate ([`ApiClient`]), one token-file rule ([`crate::token_file`]: the first line that
//! is neither blank nor a `#` comment; its last word, without a `SLURM_JWT=` prefix), one
//! description of a failed request ([`describe`]) and of the server's reason for a refusal
//! ([`server_message`]), and one retry policy per kind of call ([`Call`]).

use anyhow::{bail, Context};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{RequestBuilder, StatusCode, Url};
use std::sync::Mutex;
use std::time::Duration;

/// `--server` and `--token-file` of the commands that ask a `jobscope serve` for something
/// (`watch`, `report`, `log`), flattened into each one's arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServerArgs {
    /// Base URL of a `jobscope serve`.
    #[arg(
        long,
        env = "JOBSCOPE_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,

    /// File holding the API token (sent as `Authorization: Bearer`); needed when the server has
    /// a tokens file. The token is the first line that is not blank or a `#` comment
    /// (`SLURM_JWT=...` as `scontrol token` prints it works too). A reader or user token is
    /// enough for events and reports; a job's output needs its owner's token or an admin's.
    /// Without this option, when `scontrol` is on the PATH, `watch` runs `scontrol token
    /// lifespan=3600` and sends your Slurm JWT (the server needs --slurm-jwt-key-file), and
    /// fetches a fresh one once when the server answers 401.
    #[arg(long, env = "JOBSCOPE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

/// What a command does with the server, and so what it does when a call does not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// The agent's sample batches: kept (spooled) and sent again unless the server refused the
    /// batch itself (400, 413, 422...). A token or `--server` URL an admin will fix (401, 403,
    /// 404, 405), load (408, 429) and 5xx are the setup's or the server's fault, not the batch's.
    SampleBatch,
    /// The hook's lifecycle events: spooled and sent again unless the server refused the event
    /// for good (every 4xx but 401, 403, 408 and 429; the hook treats 404 apart). A spool never
    /// waits behind an event the server will never take; 5xx (503 during a database outage
    /// included) is kept.
    Lifecycle,
    /// `watch`'s stream: a 4xx ends watching (the request itself is wrong, or not allowed);
    /// anything else reconnects after a backoff.
    Stream,
    /// A one-shot read (`report`): nothing is retried; the answer is the answer.
    Read,
}

impl Call {
    /// Whether a call that got `status` (not a success) should be made again later.
    pub fn retry(self, status: StatusCode) -> bool {
        match self {
            Call::SampleBatch => {
                status.is_server_error()
                    || matches!(
                        status,
                        StatusCode::UNAUTHORIZED
                            | StatusCode::FORBIDDEN
                            | StatusCode::NOT_FOUND
                            | StatusCode::METHOD_NOT_ALLOWED
                            | StatusCode::REQUEST_TIMEOUT
                            | StatusCode::TOO_MANY_REQUESTS
                    )
            }
            Call::Lifecycle => {
                !status.is_client_error()
                    || matches!(
                        status,
                        StatusCode::UNAUTHORIZED
                            | StatusCode::FORBIDDEN
                            | StatusCode::NOT_FOUND
                            | StatusCode::REQUEST_TIMEOUT
                            | StatusCode::TOO_MANY_REQUESTS
                    )
            }
            Call::Stream => !status.is_client_error(),
            Call::Read => false,
        }
    }
}

/// Timeouts and identity of an [`ApiClient`].
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Bounds each whole request; `None` for a stream, which lasts as long as it lasts.
    pub timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// The `User-Agent`; reqwest's own when `None`.
    pub user_agent: Option<&'static str>,
}

/// `--server` as a base URL: http or https, able to take a path; its query and fragment are
/// dropped.
pub fn server_url(server: &str) -> anyhow::Result<Url> {
    let mut base =
        Url::parse(server).with_context(|| format!("--server {server:?} is not a URL"))?;
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        bail!("--server must be an http:// or https:// URL");
    }
    base.set_query(None);
    base.set_fragment(None);
    Ok(base)
}

/// A client of one `serve`: its base URL, an HTTP client, and the token it sends.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    /// Behind a lock so `watch` can swap in a fresh `scontrol` token.
    auth: Mutex<Option<HeaderValue>>,
}

impl ApiClient {
    /// A client of `base` (see [`server_url`]) that sends `token`, when there is one, as a
    /// bearer token.
    pub fn new(
        base: Url,
        token: Option<&str>,
        options: ClientOptions,
    ) -> anyhow::Result<ApiClient> {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder().connect_timeout(options.connect_timeout);
        if let Some(timeout) = options.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(agent) = options.user_agent {
            builder = builder.user_agent(agent);
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        let auth = token.map(bearer).transpose()?;
        Ok(ApiClient {
            http,
            base,
            auth: Mutex::new(auth),
        })
    }

    /// The base URL with `segments` appended (each percent-encoded as one segment); the base's
    /// own path is kept, without its trailing slash.
    pub fn url(&self, segments: &[&str]) -> Url {
        join(&self.base, segments)
    }

    /// The URL of an API path written as text (`/v1/events/job-started`): its segments, joined
    /// as [`ApiClient::url`] joins them.
    pub fn url_of_path(&self, path: &str) -> Url {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.url(&segments)
    }

    pub fn get(&self, url: Url) -> RequestBuilder {
        self.authorized(self.http.get(url))
    }

    pub fn post(&self, url: Url) -> RequestBuilder {
        self.authorized(self.http.post(url))
    }

    /// Sends `token` from now on.
    pub fn set_token(&self, token: &str) -> anyhow::Result<()> {
        let value = bearer(token)?;
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(())
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match auth {
            Some(auth) => request.header(AUTHORIZATION, auth),
            None => request,
        }
    }
}

/// `base` with `segments` appended (see [`ApiClient::url`]).
pub fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// The sensitive `Authorization: Bearer` value of a token; the token never appears in an error.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| anyhow::anyhow!("the token file holds characters a header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// A failed request, said without its URL (which could carry a user name in its query): what
/// went wrong, then the innermost cause.
pub fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "cannot connect"
    } else if err.is_timeout() {
        "timed out"
    } else {
        "connection lost"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut detail = None;
    while let Some(err) = source {
        detail = Some(err.to_string());
        source = err.source();
    }
    match detail {
        Some(detail) => format!("{kind} ({detail})"),
        None => kind.to_string(),
    }
}

/// The server's own word on a refusal: the `message` of its `{"error", "message"}` body,
/// trimmed; `None` when the body is not one.
pub fn server_message(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(|m| m.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str) -> ApiClient {
        let options = ClientOptions {
            timeout: None,
            connect_timeout: Duration::from_secs(1),
            user_agent: None,
        };
        ApiClient::new(server_url(server).unwrap(), Some("tok"), options).unwrap()
    }

    #[test]
    fn paths_join_onto_the_base_path_once() {
        for server in ["http://h:1", "http://h:1/", "http://h:1/?q=1#f"] {
            assert_eq!(
                client(server).url_of_path("/v1/samples").as_str(),
                "http://h:1/v1/samples"
            );
        }
        let behind_a_proxy = client("https://h/jobscope/");
        assert_eq!(
            behind_a_proxy
                .url(&["v1", "nodes", "n 1/2", "jobs"])
                .as_str(),
            "https://h/jobscope/v1/nodes/n%201%2F2/jobs"
        );
        assert_eq!(
            behind_a_proxy
                .url_of_path("/v1/events/job-started")
                .as_str(),
            "https://h/jobscope/v1/events/job-started"
        );
    }

    #[test]
    fn a_server_must_be_an_http_url() {
        for bad in ["h:1", "ftp://h/", "mailto:x@y", "not a url"] {
            assert!(server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_kind_of_call_retries_its_own_statuses() {
        use StatusCode as S;
        let retried = |call: Call| -> Vec<u16> {
            [400, 401, 403, 404, 405, 408, 413, 422, 429, 500, 503]
                .into_iter()
                .filter(|s| call.retry(S::from_u16(*s).unwrap()))
                .collect()
        };
        assert_eq!(
            retried(Call::SampleBatch),
            [401, 403, 404, 405, 408, 429, 500, 503]
        );
        assert_eq!(
            retried(Call::Lifecycle),
            [401, 403, 404, 408, 429, 500, 503]
        );
        assert_eq!(retried(Call::Stream), [500, 503]);
        assert!(retried(Call::Read).is_empty());
    }

    #[test]
    fn a_refusal_says_the_servers_message() {
        assert_eq!(
            server_message(r#"{"error":"invalid_request","message":" no such job "}"#).as_deref(),
            Some("no such job")
        );
        assert_eq!(server_message("plain text"), None);
        assert_eq!(server_message(r#"{"error":"x"}"#), None);
    }

    #[test]
    fn the_token_file_gives_a_sensitive_bearer_header() {
        let token = crate::token_file::parse("# reader\nreader  s3cret-token-0123456789\n");
        let value = bearer(&token.unwrap()).unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer s3cret-token-0123456789");
        assert!(value.is_sensitive());
        assert!(crate::token_file::parse("\n  \n").is_err());
    }

    #[test]
    fn the_token_is_a_sensitive_header_that_no_error_shows() {
        assert!(bearer("tok").unwrap().is_sensitive());
        let err = bearer("t\nk").unwrap_err().to_string();
        assert!(!err.contains("t\nk"), "{err}");
    }
}
