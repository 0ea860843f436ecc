//! `jobscope log JOB [--stream stderr] [--tail N]` (a job's output, as the server holds it)
//! and `jobscope watch JOB --log` (its output as it grows, like `tail -f`, then the job's exit
//! status). Both read `/v1/jobs/{id}/log` and `/v1/stream/jobs/{id}/log`.

use crate::client::{ApiClient, ClientOptions};
use crate::domain::joblog::LogStream;
use anyhow::{bail, Context};
use futures_util::StreamExt;
use reqwest::Url;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// The job whose output to print.
    #[arg(value_name = "JOB_ID")]
    pub job_id: String,

    /// Which stream: stdout or stderr.
    #[arg(long, value_name = "STREAM", default_value = "stdout", value_parser = parse_stream)]
    pub stream: LogStream,

    /// Only the last N lines (like `tail -n`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tail: Option<u32>,

    #[command(flatten)]
    pub api: crate::client::ServerArgs,
}

pub fn parse_stream(text: &str) -> Result<LogStream, String> {
    text.parse().map_err(|_| "stdout or stderr".to_owned())
}

/// A client of the job output routes, on the one client of our own API (`crate::client`).
struct Client {
    api: ApiClient,
}

impl Client {
    fn new(server: &str, token_file: Option<&PathBuf>) -> anyhow::Result<Client> {
        let base = crate::client::server_url(server)?;
        let token = match token_file {
            Some(path) => Some(crate::token_file::read(path)?),
            None => None,
        };
        let options = ClientOptions {
            timeout: None,
            connect_timeout: Duration::from_secs(10),
            user_agent: None,
        };
        Ok(Client {
            api: ApiClient::new(base, token.as_deref(), options)?,
        })
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.api.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    async fn get(
        &self,
        url: Url,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self.api.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", crate::client::describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = crate::client::server_message(&body).unwrap_or(body);
            bail!(Refused(format!("the server answered {status}: {message}")));
        }
        Ok(response)
    }

    async fn json(&self, url: Url) -> anyhow::Result<serde_json::Value> {
        self.get(url, None)
            .await?
            .json()
            .await
            .context("reading the answer")
    }
}

/// A 4xx or 5xx answer: said once, not retried.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Runs `jobscope log`: 0 with the output printed, 1 on any error (said on stderr).
pub async fn run(args: LogArgs) -> ExitCode {
    match print_history(&args, &mut std::io::stdout().lock()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jobscope log: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the job's stored output (or its last `--tail` lines) to `out`.
pub async fn print_history(args: &LogArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let client = Client::new(&args.api.server, args.api.token_file.as_ref())?;
    let path = ["v1", "jobs", args.job_id.as_str(), "log"];
    let stream = ("stream", args.stream.as_str().to_owned());
    if let Some(n) = args.tail {
        let url = client.url(
            &path,
            &[
                stream,
                ("from_line", format!("-{n}")),
                ("lines", n.to_string()),
            ],
        );
        let page = client.json(url).await?;
        out.write_all(page["text"].as_str().unwrap_or_default().as_bytes())?;
        return Ok(out.flush()?);
    }
    let mut offset = 0i64;
    loop {
        let url = client.url(
            &path,
            &[
                stream.clone(),
                ("offset", offset.to_string()),
                ("limit", "1048576".into()),
            ],
        );
        let page = client.json(url).await?;
        out.write_all(page["text"].as_str().unwrap_or_default().as_bytes())?;
        let next = page["next_offset"].as_i64().unwrap_or(offset);
        if page["more"] != true || next <= offset {
            break;
        }
        offset = next;
    }
    Ok(out.flush()?)
}

/// `jobscope watch JOB --log`: prints the job's output as it grows, reconnecting with the last
/// byte offset after a dropped connection, until the stream says `completed`; then the exit
/// status of the job's final state ([`crate::watch::exit_status`]).
pub async fn follow(
    job_id: &str,
    stream: LogStream,
    server: &str,
    token_file: Option<&PathBuf>,
    out: &mut (impl Write + Send),
) -> anyhow::Result<u8> {
    let client = Client::new(server, token_file)?;
    let url = client.url(
        &["v1", "stream", "jobs", job_id, "log"],
        &[("stream", stream.as_str().to_owned())],
    );
    let mut cursor: Option<String> = None;
    let mut attempt = 0u32;
    loop {
        let response = match client.get(url.clone(), cursor.as_deref()).await {
            Ok(r) => r,
            Err(err) if err.downcast_ref::<Refused>().is_some() => return Err(err),
            Err(err) => {
                attempt += 1;
                if attempt > 30 {
                    return Err(err);
                }
                tokio::time::sleep(crate::watch::backoff(attempt, u64::from(attempt))).await;
                continue;
            }
        };
        attempt = 0;
        let mut parser = crate::watch::SseParser::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            for event in parser.feed(&chunk) {
                let data: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
                match event.event.as_str() {
                    "log" => {
                        out.write_all(data["text"].as_str().unwrap_or_default().as_bytes())?;
                        out.flush()?;
                        cursor = event.id.clone();
                    }
                    "completed" => {
                        let job = client
                            .json(client.url(&["v1", "jobs", job_id], &[]))
                            .await?;
                        return Ok(crate::watch::exit_status(&job));
                    }
                    _ => {}
                }
            }
        }
    }
}
