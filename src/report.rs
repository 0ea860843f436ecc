//! `jobscope report`: a job's efficiency report as a readable block (like `jobstats JOBID`) or
//! JSON, and a user's (or everyone's) jobs since a time, worst first, with what they left
//! unused. It asks a `jobscope serve` (`GET /v1/jobs/{id}/report`, `GET /v1/reports`).

use crate::client::{self, ApiClient, ClientOptions, ServerArgs};
use crate::domain::report::{render, render_list, Report, ReportList};
use anyhow::{bail, Context};
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The job to report on. Without it: a list of jobs (see --user, --since).
    #[arg(value_name = "JOB_ID")]
    pub job_id: Option<String>,

    /// Only this user's jobs (the list only).
    #[arg(long, value_name = "USER", conflicts_with = "job_id")]
    pub user: Option<String>,

    /// Jobs that ended since: an age (7d, 24h, 90m) or an RFC 3339 time (the list only).
    #[arg(
        long,
        value_name = "AGE",
        default_value = "7d",
        conflicts_with = "job_id"
    )]
    pub since: String,

    /// Print the server's JSON instead of text.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub api: ServerArgs,
}

/// Runs `jobscope report`: 0 with the report printed, 1 on any error (said on stderr).
pub async fn run(args: ReportArgs) -> ExitCode {
    match fetch(&args).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("jobscope report: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The text `jobscope report` prints for `args`.
pub async fn fetch(args: &ReportArgs) -> anyhow::Result<String> {
    let base = client::server_url(&args.api.server)?;
    let mut url = match &args.job_id {
        Some(id) => client::join(&base, &["v1", "jobs", id, "report"]),
        None => client::join(&base, &["v1", "reports"]),
    };
    if args.job_id.is_none() {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("since", &args.since)
            .append_pair("sort", "waste");
        if let Some(user) = &args.user {
            query.append_pair("user", user);
        }
    }
    let token = match &args.api.token_file {
        Some(path) => Some(crate::token_file::read(path)?),
        None => None,
    };
    let options = ClientOptions {
        timeout: Some(std::time::Duration::from_secs(120)),
        connect_timeout: std::time::Duration::from_secs(10),
        user_agent: None,
    };
    let api = ApiClient::new(base, token.as_deref(), options)?;
    let response = api.get(url).send().await.map_err(|err| {
        anyhow::anyhow!(
            "cannot reach {}: {}",
            args.api.server,
            client::describe(&err)
        )
    })?;
    let status = response.status();
    let body = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        let message = client::server_message(&body).unwrap_or(body);
        bail!("the server answered {status}: {message}");
    }
    if args.json {
        return Ok(format!("{}\n", body.trim_end()));
    }
    Ok(match args.job_id {
        Some(_) => render(&serde_json::from_str::<Report>(&body).context("reading the report")?),
        None => render_list(
            &serde_json::from_str::<ReportList>(&body).context("reading the reports list")?,
        ),
    })
}
