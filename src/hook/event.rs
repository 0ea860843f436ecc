//! The lifecycle event a hook sends, built from the `SLURM_*` environment of whichever of the four
//! hook contexts runs it (see `scripts/slurm/README.md`):
//!
//! | context | node list | GPUs | job name, account | exit status |
//! |---|---|---|---|---|
//! | `prolog_slurmctld` | `SLURM_JOB_NODELIST` | – | yes | – |
//! | `prolog_slurmd` | `SLURM_NODELIST` | `SLURM_JOB_GPUS` | – | – |
//! | `epilog_slurmctld` | `SLURM_JOB_NODELIST` | – | yes | yes |
//! | `epilog_slurmd` | `SLURM_NODELIST` | `SLURM_JOB_GPUS` | – | yes |
//!
//! The payloads are those of `scripts/slurm/{prolog,epilog}.sh` plus `timestamp` (so an event
//! delivered late from the spool still records when it happened), `cluster_name` and `sluid`,
//! and for an array task `array_job_id` and `array_task_id` (slurmctld contexts only).
//! No final state is sent: a cancelled or timed-out job looks like exit 0 here, so the server
//! derives the state and the slurmrestd reconciler confirms it.

use super::nodelist;
use crate::domain::validate::MAX_NODES;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// Which hook is running: the command-line argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookKind {
    /// Job start: POST /v1/events/job-started.
    Prolog,
    /// Job end: POST /v1/events/job-finished.
    Epilog,
}

impl HookKind {
    pub fn path(self) -> &'static str {
        match self {
            HookKind::Prolog => "/v1/events/job-started",
            HookKind::Epilog => "/v1/events/job-finished",
        }
    }
}

/// `SLURM_SCRIPT_CONTEXT`: which of Slurm's four hook slots runs us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    PrologSlurmctld,
    PrologSlurmd,
    EpilogSlurmctld,
    EpilogSlurmd,
}

impl Context {
    pub fn parse(s: &str) -> Option<Context> {
        Some(match s {
            "prolog_slurmctld" => Context::PrologSlurmctld,
            "prolog_slurmd" => Context::PrologSlurmd,
            "epilog_slurmctld" => Context::EpilogSlurmctld,
            "epilog_slurmd" => Context::EpilogSlurmd,
            _ => return None,
        })
    }

    pub fn kind(self) -> HookKind {
        match self {
            Context::PrologSlurmctld | Context::PrologSlurmd => HookKind::Prolog,
            Context::EpilogSlurmctld | Context::EpilogSlurmd => HookKind::Epilog,
        }
    }
}

/// An event ready to POST: where to and what.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub path: String,
    pub job_id: String,
    pub body: Value,
}

/// What was odd about the environment, for the log; the event is still sent when it can be.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Notes(pub Vec<String>);

/// Why no event can be built at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    #[error("SLURM_JOB_ID is missing or not a number")]
    NoJobId,
    #[error("job {0}: SLURM_JOB_USER is missing and SLURM_JOB_UID names no local user")]
    NoUser(String),
}

/// A Slurm variable: unset, empty and Slurm's `(null)` (e.g. `SLURM_JOB_ACCOUNT` without
/// accounting) all mean absent.
fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && v != "(null)")
}

/// Builds the event of `kind` from the environment `env` at time `now`.
/// `user_of_uid` resolves a uid when `SLURM_JOB_USER` is missing (the prolog must name a user).
pub fn build(
    kind: HookKind,
    env: &dyn Fn(&str) -> Option<String>,
    now: DateTime<Utc>,
    gpu_vendor: &dyn Fn() -> String,
    user_of_uid: &dyn Fn(u32) -> Option<String>,
) -> Result<(Event, Notes), EnvError> {
    let mut notes = Notes::default();
    let job_id = var(env, "SLURM_JOB_ID")
        .filter(|v| v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()))
        .map(|v| v.trim_start_matches('0').to_owned())
        .filter(|v| !v.is_empty())
        .ok_or(EnvError::NoJobId)?;
    if let Some(ctx) = var(env, "SLURM_SCRIPT_CONTEXT") {
        match Context::parse(&ctx) {
            Some(c) if c.kind() != kind => notes.0.push(format!(
                "SLURM_SCRIPT_CONTEXT={ctx} but run as `hook {}`; sending a {} event",
                kind_name(kind),
                kind_name(kind)
            )),
            Some(_) => {}
            None => notes.0.push(format!("unknown SLURM_SCRIPT_CONTEXT={ctx}")),
        }
    }
    let user = var(env, "SLURM_JOB_USER").or_else(|| {
        var(env, "SLURM_JOB_UID")
            .and_then(|u| u.parse().ok())
            .and_then(user_of_uid)
    });

    let mut body = Map::new();
    body.insert("job_id".into(), json!(job_id));
    body.insert(
        "timestamp".into(),
        json!(now.to_rfc3339_opts(SecondsFormat::Micros, true)),
    );
    match (&user, kind) {
        (Some(u), _) => {
            body.insert("user".into(), json!(u));
        }
        (None, HookKind::Prolog) => return Err(EnvError::NoUser(job_id)),
        (None, HookKind::Epilog) => notes.0.push("SLURM_JOB_USER missing".into()),
    }
    body.insert("node_list".into(), json!(node_list(env, &mut notes)));

    match kind {
        HookKind::Prolog => {
            if let Some(cpus) = var(env, "SLURM_JOB_CPUS_PER_NODE") {
                match total_cpus(&cpus) {
                    Some(n) => {
                        body.insert("cpu_allocation".into(), json!(n));
                    }
                    None => notes
                        .0
                        .push(format!("cannot read SLURM_JOB_CPUS_PER_NODE={cpus:?}")),
                }
            }
            let gpus: Vec<String> = var(env, "SLURM_JOB_GPUS")
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if !gpus.is_empty() {
                body.insert("gpu_allocation".into(), json!(gpus.len()));
                body.insert("gpu_devices".into(), json!(gpus));
                body.insert("gpu_vendor".into(), json!(gpu_vendor()));
            }
            for (name, field) in [
                ("SLURM_JOB_PARTITION", "partition"),
                ("SLURM_JOB_ACCOUNT", "account"),
                ("SLURM_JOB_NAME", "job_name"),
                ("SLURM_CLUSTER_NAME", "cluster_name"),
                ("SLURM_JOB_SLUID", "sluid"),
                ("SLURM_ARRAY_JOB_ID", "array_job_id"),
            ] {
                if let Some(v) = var(env, name) {
                    body.insert(field.into(), json!(v));
                }
            }
            if let Some(task) = var(env, "SLURM_ARRAY_TASK_ID") {
                match task.parse::<u32>() {
                    Ok(n) => {
                        body.insert("array_task_id".into(), json!(n));
                    }
                    Err(_) => notes
                        .0
                        .push(format!("cannot read SLURM_ARRAY_TASK_ID={task:?}")),
                }
            }
        }
        HookKind::Epilog => match exit_status(env) {
            Some((code, signal)) => {
                body.insert("exit_code".into(), json!(code));
                body.insert("signal".into(), json!(signal));
            }
            None => notes.0.push(
                "no usable SLURM_JOB_EXIT_CODE2/SLURM_JOB_EXIT_CODE; exit status left out".into(),
            ),
        },
    }
    Ok((
        Event {
            path: kind.path().into(),
            job_id,
            body: Value::Object(body),
        },
        notes,
    ))
}

fn kind_name(kind: HookKind) -> &'static str {
    match kind {
        HookKind::Prolog => "prolog",
        HookKind::Epilog => "epilog",
    }
}

/// The whole allocation: `SLURM_JOB_NODELIST` (controller hooks) or `SLURM_NODELIST` (node
/// hooks; in 22.05 this is the job's list, not only this node), expanded. A list that cannot be
/// expanded is sent as it is (one entry) rather than dropped; an absent one falls back to this
/// node's name.
fn node_list(env: &dyn Fn(&str) -> Option<String>, notes: &mut Notes) -> Vec<String> {
    let raw = var(env, "SLURM_JOB_NODELIST").or_else(|| var(env, "SLURM_NODELIST"));
    match raw {
        Some(list) => match nodelist::expand(&list, MAX_NODES) {
            Ok(nodes) if !nodes.is_empty() => nodes,
            Ok(_) => vec![list],
            Err(e) => {
                notes.0.push(format!(
                    "cannot expand node list {list:?} ({e}); sent as is"
                ));
                vec![list]
            }
        },
        None => {
            notes.0.push("no SLURM_JOB_NODELIST/SLURM_NODELIST".into());
            var(env, "SLURMD_NODENAME").into_iter().collect()
        }
    }
}

/// Total CPUs from `SLURM_JOB_CPUS_PER_NODE`: `4`, `2(x3)`, `4,2(x2)`.
pub fn total_cpus(spec: &str) -> Option<i64> {
    let mut total: i64 = 0;
    for part in spec.split(',') {
        let part = part.trim();
        let (per, times) = match part.strip_suffix(')').and_then(|p| p.split_once("(x")) {
            Some((per, times)) => (per, times),
            None => (part, "1"),
        };
        let per: i64 = per.parse().ok().filter(|n| *n >= 0)?;
        let times: i64 = times.parse().ok().filter(|n| *n >= 0)?;
        total = total.checked_add(per.checked_mul(times)?)?;
    }
    Some(total)
}

/// Exit code and signal of the job: `SLURM_JOB_EXIT_CODE2` (`exit:signal`), else the raw wait
/// status in `SLURM_JOB_EXIT_CODE`. `None` when neither is usable: left out, never guessed.
pub fn exit_status(env: &dyn Fn(&str) -> Option<String>) -> Option<(i64, i64)> {
    if let Some((code, signal)) = var(env, "SLURM_JOB_EXIT_CODE2").and_then(|v| {
        let (c, s) = v.split_once(':')?;
        Some((c.parse::<i64>().ok()?, s.parse::<i64>().ok()?))
    }) {
        if (0..=255).contains(&code) && (0..=127).contains(&signal) {
            return Some((code, signal));
        }
    }
    var(env, "SLURM_JOB_EXIT_CODE")
        .and_then(|v| v.parse::<u32>().ok())
        .map(decode_wait_status)
}

pub use crate::domain::slurm_state::decode_wait_status;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{slurm_state, JobState};
    use std::collections::HashMap;

    fn fixture(name: &str) -> HashMap<String, String> {
        let path = format!(
            "{}/tests/fixtures/slurm-hook-env/{name}.env",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn now() -> DateTime<Utc> {
        "2026-01-02T03:04:05.123456Z".parse().unwrap()
    }

    fn build_from(
        kind: HookKind,
        env: &HashMap<String, String>,
    ) -> Result<(Event, Notes), EnvError> {
        build(
            kind,
            &|k| env.get(k).cloned(),
            now(),
            &|| "nvidia".into(),
            &|uid| (uid == 1000).then(|| "alice".into()),
        )
    }

    fn body(kind: HookKind, env: &HashMap<String, String>) -> Value {
        let (event, notes) = build_from(kind, env).unwrap();
        assert_eq!(notes, Notes::default(), "unexpected notes");
        assert_eq!(event.path, kind.path());
        event.body
    }

    // Real environments, captured from Debian's Slurm 22.05 with scripts/dev-slurm.sh and
    // JOBSCOPE_SLURM_DUMP_HOOK_ENV=1 (job 1: `sbatch --gres=gpu:1 -J gpujob --wrap 'exit 3'`).
    #[test]
    fn prolog_slurmctld_has_name_and_no_gpus() {
        let b = body(HookKind::Prolog, &fixture("prolog_slurmctld.1"));
        assert_eq!(
            b,
            json!({"job_id": "1", "timestamp": "2026-01-02T03:04:05.123456Z", "user": "root",
                   "node_list": ["vm"], "cpu_allocation": 1, "partition": "debug",
                   "job_name": "gpujob", "cluster_name": "jobscope-dev"})
        );
    }

    #[test]
    fn prolog_slurmd_has_gpus_and_no_name() {
        let b = body(HookKind::Prolog, &fixture("prolog_slurmd.1"));
        assert_eq!(
            b,
            json!({"job_id": "1", "timestamp": "2026-01-02T03:04:05.123456Z", "user": "root",
                   "node_list": ["vm"], "cpu_allocation": 1, "gpu_allocation": 1,
                   "gpu_devices": ["0"], "gpu_vendor": "nvidia", "partition": "debug",
                   "cluster_name": "jobscope-dev"})
        );
    }

    #[test]
    fn both_epilogs_report_exit_3() {
        for ctx in ["epilog_slurmctld.1", "epilog_slurmd.1"] {
            let b = body(HookKind::Epilog, &fixture(ctx));
            assert_eq!(
                b,
                json!({"job_id": "1", "timestamp": "2026-01-02T03:04:05.123456Z", "user": "root",
                       "node_list": ["vm"], "exit_code": 3, "signal": 0}),
                "{ctx}"
            );
        }
    }

    #[test]
    fn array_task_prolog_names_the_task_job() {
        let b = body(HookKind::Prolog, &fixture("prolog_slurmctld.2"));
        assert_eq!(b["job_id"], "2");
        assert_eq!(b["job_name"], "arr");
        assert_eq!(
            (&b["array_job_id"], &b["array_task_id"]),
            (&json!("2"), &json!(2))
        );
        let b = body(HookKind::Epilog, &fixture("epilog_slurmd.4"));
        assert_eq!(b["job_id"], "4");
        assert_eq!(
            (b["exit_code"].clone(), b["signal"].clone()),
            (json!(0), json!(0))
        );
    }

    #[test]
    fn multi_node_and_multi_gpu_variables() {
        let mut env = fixture("prolog_slurmd.1");
        env.insert("SLURM_NODELIST".into(), "gpu[01-02,07],cpu5".into());
        env.insert("SLURM_JOB_CPUS_PER_NODE".into(), "8(x2),4,2".into());
        env.insert("SLURM_JOB_GPUS".into(), "0,1,3".into());
        env.insert("SLURM_JOB_ACCOUNT".into(), "(null)".into());
        env.insert("SLURM_JOB_SLUID".into(), "s5K1KKYAYG5D00".into());
        let b = body(HookKind::Prolog, &env);
        assert_eq!(b["node_list"], json!(["gpu01", "gpu02", "gpu07", "cpu5"]));
        assert_eq!(b["cpu_allocation"], 22);
        assert_eq!(b["gpu_devices"], json!(["0", "1", "3"]));
        assert_eq!(b["gpu_allocation"], 3);
        assert_eq!(b["sluid"], "s5K1KKYAYG5D00");
        assert!(b.get("account").is_none(), "(null) means absent");
    }

    #[test]
    fn controller_list_wins_and_bad_lists_are_sent_unexpanded() {
        let mut env = fixture("prolog_slurmctld.1");
        env.insert("SLURM_NODELIST".into(), "other".into());
        env.insert("SLURM_JOB_NODELIST".into(), "n[1-2]".into());
        assert_eq!(
            body(HookKind::Prolog, &env)["node_list"],
            json!(["n1", "n2"])
        );
        env.insert("SLURM_JOB_NODELIST".into(), "n[1-".into());
        let (event, notes) = build_from(HookKind::Prolog, &env).unwrap();
        assert_eq!(event.body["node_list"], json!(["n[1-"]));
        assert_eq!(notes.0.len(), 1, "{notes:?}");
        // No list at all: this node.
        env.remove("SLURM_JOB_NODELIST");
        env.remove("SLURM_NODELIST");
        env.insert("SLURMD_NODENAME".into(), "vm".into());
        let (event, _) = build_from(HookKind::Prolog, &env).unwrap();
        assert_eq!(event.body["node_list"], json!(["vm"]));
    }

    #[test]
    fn job_id_and_user_are_required_for_a_prolog() {
        let mut env = fixture("prolog_slurmd.1");
        env.insert("SLURM_JOB_ID".into(), "12a".into());
        assert_eq!(
            build_from(HookKind::Prolog, &env).unwrap_err(),
            EnvError::NoJobId
        );
        env.insert("SLURM_JOB_ID".into(), "".into());
        assert_eq!(
            build_from(HookKind::Prolog, &env).unwrap_err(),
            EnvError::NoJobId
        );
        env.insert("SLURM_JOB_ID".into(), "0042".into());
        env.remove("SLURM_JOB_USER");
        env.insert("SLURM_JOB_UID".into(), "1000".into());
        let (event, _) = build_from(HookKind::Prolog, &env).unwrap();
        assert_eq!(
            (event.job_id.as_str(), &event.body["user"]),
            ("42", &json!("alice"))
        );
        env.insert("SLURM_JOB_UID".into(), "4242".into());
        assert_eq!(
            build_from(HookKind::Prolog, &env).unwrap_err(),
            EnvError::NoUser("42".into())
        );
        // An epilog without a user still finishes a job the server knows.
        let (event, notes) = build_from(HookKind::Epilog, &env).unwrap();
        assert!(event.body.get("user").is_none());
        assert!(
            notes.0.iter().any(|n| n == "SLURM_JOB_USER missing"),
            "{notes:?}"
        );
    }

    #[test]
    fn context_mismatch_is_noted_and_the_argument_wins() {
        let env = fixture("epilog_slurmd.1");
        let (event, notes) = build_from(HookKind::Prolog, &env).unwrap();
        assert_eq!(event.path, "/v1/events/job-started");
        assert!(notes.0[0].contains("epilog_slurmd"), "{notes:?}");
        assert_eq!(
            Context::parse("prolog_slurmd").map(Context::kind),
            Some(HookKind::Prolog)
        );
        assert_eq!(
            Context::parse("epilog_slurmctld").map(Context::kind),
            Some(HookKind::Epilog)
        );
        assert_eq!(Context::parse("task_prolog"), None);
    }

    #[test]
    fn exit_status_decoding() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let st = |e: HashMap<String, String>| exit_status(&|k| e.get(k).cloned());
        assert_eq!(st(env(&[("SLURM_JOB_EXIT_CODE2", "3:0")])), Some((3, 0)));
        assert_eq!(st(env(&[("SLURM_JOB_EXIT_CODE2", "0:15")])), Some((0, 15)));
        // EXIT_CODE2 wins over the raw status; a broken EXIT_CODE2 falls back to it.
        assert_eq!(
            st(env(&[
                ("SLURM_JOB_EXIT_CODE2", "1:0"),
                ("SLURM_JOB_EXIT_CODE", "768")
            ])),
            Some((1, 0))
        );
        assert_eq!(
            st(env(&[
                ("SLURM_JOB_EXIT_CODE2", "x"),
                ("SLURM_JOB_EXIT_CODE", "768")
            ])),
            Some((3, 0))
        );
        assert_eq!(
            st(env(&[
                ("SLURM_JOB_EXIT_CODE2", "300:0"),
                ("SLURM_JOB_EXIT_CODE", "9")
            ])),
            Some((0, 9))
        );
        assert_eq!(st(env(&[("SLURM_JOB_EXIT_CODE", "768")])), Some((3, 0)));
        assert_eq!(st(env(&[("SLURM_JOB_EXIT_CODE", "9")])), Some((0, 9)));
        assert_eq!(
            st(env(&[("SLURM_JOB_EXIT_CODE", "139")])),
            Some((0, 11)),
            "SIGSEGV with core"
        );
        assert_eq!(st(env(&[("SLURM_JOB_EXIT_CODE", "65280")])), Some((255, 0)));
        assert_eq!(st(env(&[("SLURM_JOB_EXIT_CODE", "-1")])), None);
        assert_eq!(st(env(&[])), None);
    }

    #[test]
    fn what_the_server_makes_of_each_epilog() {
        // The hook sends no state; the server's mapping turns exit:signal into one. Cancelled
        // and timed-out jobs show 0:0 in the epilog, so only the reconciler can tell them.
        for (exit2, want) in [
            ("0:0", JobState::Completed),
            ("3:0", JobState::Failed),
            ("0:9", JobState::Cancelled),
            ("0:15", JobState::Cancelled),
            ("0:11", JobState::Failed),
        ] {
            let mut env = fixture("epilog_slurmd.1");
            env.insert("SLURM_JOB_EXIT_CODE2".into(), exit2.into());
            let b = body(HookKind::Epilog, &env);
            let state =
                slurm_state::final_state(None, b["exit_code"].as_i64(), b["signal"].as_i64());
            assert_eq!(state, want, "{exit2}");
        }
    }

    #[test]
    fn cpus_per_node_forms() {
        assert_eq!(total_cpus("4"), Some(4));
        assert_eq!(total_cpus("2(x3)"), Some(6));
        assert_eq!(total_cpus("4,2(x2)"), Some(8));
        assert_eq!(total_cpus("4,x"), None);
        assert_eq!(total_cpus("2(x)"), None);
        assert_eq!(total_cpus(""), None);
    }
}
