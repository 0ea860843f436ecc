//! Jobs as slurmrestd reports them (`GET /slurm/<version>/jobs`), read tolerantly across API
//! versions: v0.0.36–v0.0.38 (Slurm 22.05) give `job_state` as a string, integers as numbers and
//! `exit_code` as the raw wait status; v0.0.40 and later give `job_state` as a list, integers
//! as `{set, infinite, number}` and `exit_code` as `{status, return_code, signal: {id}}`.
//! A job without an id or a state is skipped; any other missing field is `None`.
//!
//! Memory is only here: no hook environment carries it. The request is `memory_per_node` (times
//! the node count) or `memory_per_cpu` (times the CPUs); the allocation is the `mem=` of
//! `tres_alloc_str`, which Slurm only fills when memory is a consumable resource
//! (`SelectTypeParameters=CR_*_Memory`). `tres_req_str` is not read: without `--mem` it names the
//! whole node, which nobody asked for.

use crate::domain::nodelist;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

/// What jobscope needs of one Slurm job.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmJob {
    pub id: String,
    /// Base state, upper case: `RUNNING`, `COMPLETED`, `TIMEOUT`, ...
    pub state: String,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub user: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub name: Option<String>,
    pub cluster: Option<String>,
    pub nodes: Vec<String>,
    pub cpus: Option<i64>,
    /// Memory asked for, MiB, the whole job's.
    pub requested_memory_mb: Option<i64>,
    /// Memory allocated, MiB, the whole job's (only when memory is consumable).
    pub allocated_memory_mb: Option<i64>,
    /// The array a task belongs to (its first job's id) and the task's index.
    pub array_job_id: Option<String>,
    pub array_task_id: Option<i64>,
    pub start: Option<DateTime<Utc>>,
    /// Only for finished jobs (for a running one Slurm reports the projected end).
    pub end: Option<DateTime<Utc>>,
}

/// States after which a job will not run again.
const TERMINAL: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
];

impl SlurmJob {
    pub fn is_terminal(&self) -> bool {
        TERMINAL.contains(&self.state.as_str())
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "RUNNING" | "COMPLETING" | "SUSPENDED")
    }

    /// Whether it ever got nodes (a job cancelled while pending ran no hook and has none).
    pub fn ran(&self) -> bool {
        !self.nodes.is_empty() && self.start.is_some()
    }
}

/// An integer in either encoding; unset or infinite is `None`.
pub(super) fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::Object(o) => {
            if o.get("set").and_then(Value::as_bool) == Some(false)
                || o.get("infinite").and_then(Value::as_bool) == Some(true)
            {
                return None;
            }
            o.get("number").and_then(Value::as_i64)
        }
        _ => None,
    }
}

pub(super) fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "(null)")
        .map(str::to_owned)
}

fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    int(v)
        .filter(|t| *t > 0)
        .and_then(|t| Utc.timestamp_opt(t, 0).single())
}

fn state(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.first()?.as_str()?.to_owned(),
        _ => return None,
    };
    crate::domain::slurm_state::normalize(&s)
}

/// `(exit code, signal)`: from the raw wait status (v0.0.38) or the object (v0.0.40+).
fn exit_status(v: Option<&Value>) -> (Option<i64>, Option<i64>) {
    match v {
        Some(Value::Number(n)) => match n.as_u64().and_then(|s| u32::try_from(s).ok()) {
            Some(s) => {
                let (c, sig) = crate::domain::slurm_state::decode_wait_status(s);
                (Some(c), Some(sig))
            }
            None => (None, None),
        },
        Some(Value::Object(o)) => {
            let code = int(o.get("return_code"));
            // `signal.id` from v0.0.40; Slurm 23.02's v0.0.39 is read as naming it `signal_id`.
            let signal = o
                .get("signal")
                .and_then(|s| int(s.get("id")).or_else(|| int(s.get("signal_id"))))
                .or(code.map(|_| 0));
            (code, signal)
        }
        _ => (None, None),
    }
}

/// MiB of a TRES amount as Slurm prints it: `1024` or `1024M`, `1G`, `1.50G`, `2T`, `512K`.
fn tres_mib(amount: &str) -> Option<i64> {
    let split = amount
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(amount.len());
    let (number, unit) = amount.split_at(split);
    let scale = match unit {
        "K" => 1.0 / 1024.0,
        "" | "M" => 1.0,
        "G" => 1024.0,
        "T" => 1024.0 * 1024.0,
        "P" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let mib = (number.parse::<f64>().ok()? * scale).round();
    (mib.is_finite() && mib >= 0.0 && mib < i64::MAX as f64).then_some(mib as i64)
}

/// `mem=` of a TRES string (`cpu=2,mem=1G,node=1,billing=2`).
fn tres_memory(tres: Option<&Value>) -> Option<i64> {
    text(tres)?
        .split(',')
        .find_map(|item| item.strip_prefix("mem="))
        .and_then(tres_mib)
}

/// `(requested, allocated)` memory of the whole job, MiB.
fn memory(v: &Value, cpus: Option<i64>, node_count: usize) -> (Option<i64>, Option<i64>) {
    let positive = |m: Option<i64>| m.filter(|m| *m > 0);
    let nodes = int(v.get("node_count"))
        .filter(|n| *n > 0)
        .unwrap_or(node_count.max(1) as i64);
    let requested = positive(int(v.get("memory_per_node")))
        .and_then(|m| m.checked_mul(nodes))
        .or_else(|| positive(int(v.get("memory_per_cpu"))).and_then(|m| m.checked_mul(cpus?)));
    (requested, positive(tres_memory(v.get("tres_alloc_str"))))
}

fn job(v: &Value) -> Option<SlurmJob> {
    let id = match v.get("job_id")? {
        Value::Number(n) => n.as_u64()?.to_string(),
        other => int(Some(other))?.to_string(),
    };
    let state = state(v.get("job_state"))?;
    let (exit_code, signal) = exit_status(v.get("exit_code"));
    let nodes = text(v.get("nodes"))
        .map(|list| {
            nodelist::expand(&list, crate::domain::validate::MAX_NODES)
                .unwrap_or_else(|_| vec![list])
        })
        .unwrap_or_default();
    let terminal = TERMINAL.contains(&state.as_str());
    let cpus = int(v.get("cpus"));
    let (requested_memory_mb, allocated_memory_mb) = memory(v, cpus, nodes.len());
    Some(SlurmJob {
        id,
        exit_code,
        signal,
        user: text(v.get("user_name")),
        partition: text(v.get("partition")),
        account: text(v.get("account")),
        name: text(v.get("name")),
        cluster: text(v.get("cluster")),
        nodes,
        cpus,
        requested_memory_mb,
        allocated_memory_mb,
        // 22.05 gives 0 and null for a job that is no array task.
        array_job_id: int(v.get("array_job_id"))
            .filter(|id| *id > 0)
            .map(|id| id.to_string()),
        array_task_id: int(v.get("array_task_id")).filter(|t| *t >= 0),
        start: time(v.get("start_time")),
        end: if terminal {
            time(v.get("end_time"))
        } else {
            None
        },
        state,
    })
}

/// The jobs of a `/jobs` response; entries that make no sense are skipped.
pub fn parse_jobs(body: &Value) -> Vec<SlurmJob> {
    body.get("jobs")
        .and_then(Value::as_array)
        .map(|jobs| jobs.iter().filter_map(job).collect())
        .unwrap_or_default()
}

/// Error messages slurmrestd put in a response's `errors` list.
pub fn errors(body: &Value) -> Vec<String> {
    body.get("errors")
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    text(e.get("description"))
                        .or_else(|| text(e.get("error")))
                        .unwrap_or_else(|| e.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{slurm_state, JobState};

    fn fixture(name: &str) -> Vec<SlurmJob> {
        parse_jobs(&super::super::fixture_body(name))
    }

    fn by_id<'a>(jobs: &'a [SlurmJob], id: &str) -> &'a SlurmJob {
        jobs.iter().find(|j| j.id == id).unwrap()
    }

    /// Captured from Debian's slurmrestd 22.05 (scripts/dev-slurm.sh): job 1 `true`, 2 `exit 3`,
    /// 3 cancelled while running, 4 running with a GPU, 5 timed out.
    #[test]
    fn real_22_05_responses_in_every_version() {
        for v in ["v0.0.36", "v0.0.37", "v0.0.38"] {
            let jobs = fixture(&format!("jobs-{v}.json"));
            assert_eq!(jobs.len(), 5, "{v}");
            let summary: Vec<(String, Option<i64>, Option<i64>, bool)> = jobs
                .iter()
                .map(|j| (j.state.clone(), j.exit_code, j.signal, j.is_terminal()))
                .collect();
            assert_eq!(
                summary,
                vec![
                    ("COMPLETED".into(), Some(0), Some(0), true),
                    ("FAILED".into(), Some(3), Some(0), true),
                    ("CANCELLED".into(), Some(0), Some(15), true),
                    ("RUNNING".into(), Some(0), Some(0), false),
                    ("TIMEOUT".into(), Some(0), Some(15), true),
                ],
                "{v}"
            );
            let ok = by_id(&jobs, "1");
            assert_eq!(ok.user.as_deref(), Some("root"));
            assert_eq!(ok.partition.as_deref(), Some("debug"));
            assert_eq!(ok.name.as_deref(), Some("ok"));
            assert_eq!(ok.cluster.as_deref(), Some("jobscope-dev"));
            assert_eq!(ok.nodes, vec!["vm"]);
            assert!(ok.start.is_some() && ok.end.is_some());
            assert_eq!(ok.account, None, "no accounting: empty");
            let running = by_id(&jobs, "4");
            assert!(
                running.is_running() && running.end.is_none(),
                "projected end ignored"
            );
        }
    }

    /// `sbatch --array=1-3` on the one-node dev cluster, two tasks running and the third still
    /// pending under the array's own id (captured from Debian's slurmrestd 22.05, v0.0.38).
    #[test]
    fn real_22_05_array_tasks() {
        let jobs = fixture("jobs-v0.0.38.array.json");
        let tasks: Vec<(&str, &str, Option<&str>, Option<i64>)> = jobs
            .iter()
            .map(|j| {
                (
                    j.id.as_str(),
                    j.state.as_str(),
                    j.array_job_id.as_deref(),
                    j.array_task_id,
                )
            })
            .collect();
        assert_eq!(
            tasks,
            [
                ("2", "RUNNING", Some("1"), Some(1)),
                ("3", "RUNNING", Some("1"), Some(2)),
                ("1", "PENDING", Some("1"), Some(3)),
            ]
        );
        // No array task: 22.05 says 0 and null.
        let plain = fixture("jobs-v0.0.38.json");
        assert!(plain
            .iter()
            .all(|j| j.array_job_id.is_none() && j.array_task_id.is_none()));
    }

    #[test]
    fn newer_versions_shape() {
        let jobs = fixture("jobs-v0.0.41.handwritten.json");
        let states: Vec<(&str, Option<i64>, Option<i64>)> = jobs
            .iter()
            .map(|j| (j.state.as_str(), j.exit_code, j.signal))
            .collect();
        assert_eq!(
            states,
            vec![
                ("COMPLETED", Some(0), Some(0)),
                ("FAILED", Some(3), Some(0)),
                ("CANCELLED", Some(0), Some(15)),
                ("RUNNING", Some(0), Some(0)),
                ("TIMEOUT", Some(0), Some(15)),
                ("OUT_OF_MEMORY", Some(0), Some(9)),
                ("CANCELLED", Some(0), Some(0)),
            ]
        );
        assert_eq!(by_id(&jobs, "1").cpus, Some(1));
        assert!(
            !by_id(&jobs, "7").ran(),
            "cancelled while pending: no nodes, no start"
        );
        assert!(by_id(&jobs, "3").ran());
    }

    #[test]
    fn slurm_truth_maps_to_jobscope_states() {
        let jobs = fixture("jobs-v0.0.41.handwritten.json");
        let mapped: Vec<JobState> = jobs
            .iter()
            .filter(|j| j.is_terminal())
            .map(|j| slurm_state::final_state(Some(&j.state), j.exit_code, j.signal))
            .collect();
        use JobState::*;
        assert_eq!(
            mapped,
            vec![Completed, Failed, Cancelled, Cancelled, Failed, Cancelled]
        );
    }

    #[test]
    fn exit_status_in_every_encoding() {
        let raw = serde_json::json!(768); // exit 3, v0.0.38's raw wait status
        assert_eq!(exit_status(Some(&raw)), (Some(3), Some(0)));
        let killed = serde_json::json!({"status": ["SIGNALED"],
            "return_code": {"set": true, "infinite": false, "number": 0},
            "signal": {"id": {"set": true, "infinite": false, "number": 15}, "name": "TERM"}});
        assert_eq!(exit_status(Some(&killed)), (Some(0), Some(15)));
        let older = serde_json::json!({"return_code": 0,
            "signal": {"signal_id": {"set": true, "infinite": false, "number": 9}}});
        assert_eq!(exit_status(Some(&older)), (Some(0), Some(9)));
        let unset =
            serde_json::json!({"return_code": {"set": false, "infinite": false, "number": 0}});
        assert_eq!(exit_status(Some(&unset)), (None, None));
        assert_eq!(exit_status(Some(&serde_json::json!("x"))), (None, None));
    }

    #[test]
    fn memory_request_and_allocation() {
        // The 22.05 fixtures ran on CR_Core without --mem: no request, nothing allocated,
        // although tres_req_str names the whole node.
        for j in fixture("jobs-v0.0.38.json") {
            assert_eq!((j.requested_memory_mb, j.allocated_memory_mb), (None, None));
        }
        // Captured on dev-slurm's cgroup mode (CR_Core_Memory, DefMemPerNode=512): 1 running
        // `-c 2 --mem=1G`; pending 2 `-c 2 --mem-per-cpu=300` and 3 without --mem.
        let memory: Vec<(Option<i64>, Option<i64>)> = fixture("jobs-v0.0.38.mem.json")
            .iter()
            .map(|j| (j.requested_memory_mb, j.allocated_memory_mb))
            .collect();
        assert_eq!(
            memory,
            [
                (Some(1024), Some(1024)),
                (Some(600), None),
                (Some(512), None)
            ]
        );
        let with = |extra: Value| {
            let mut v = serde_json::json!({"job_id": 1, "job_state": "RUNNING", "cpus": 4,
                "node_count": 2, "nodes": "n[1-2]"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let j = job(&v).unwrap();
            (j.requested_memory_mb, j.allocated_memory_mb)
        };
        // --mem=1G on two nodes, memory consumable (CR_Core_Memory).
        let per_node = serde_json::json!({"memory_per_node": 1024, "memory_per_cpu": null,
            "tres_alloc_str": "cpu=4,mem=2G,node=2,billing=4"});
        assert_eq!(with(per_node), (Some(2048), Some(2048)));
        // --mem-per-cpu=300, v0.0.40's number objects, memory not consumable.
        let per_cpu = serde_json::json!({
            "memory_per_node": {"set": false, "infinite": false, "number": 0},
            "memory_per_cpu": {"set": true, "infinite": false, "number": 300},
            "tres_alloc_str": "cpu=4,node=2,billing=4"});
        assert_eq!(with(per_cpu), (Some(1200), None));
        for (tres, mib) in [
            ("mem=1.50G", Some(1536)),
            ("cpu=1,mem=24105M", Some(24105)),
            ("mem=512", Some(512)),
            ("mem=2048K", Some(2)),
            ("mem=1T", Some(1 << 20)),
            ("mem=1X", None),
            ("mem=", None),
            ("mem=G", None),
            ("mem=-1G", None),
            ("cpu=1", None),
        ] {
            let v = serde_json::json!(tres);
            assert_eq!(tres_memory(Some(&v)), mib, "{tres}");
        }
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        let body = serde_json::json!({"jobs": [
            {"job_state": "RUNNING"},
            {"job_id": 9},
            {"job_id": "x", "job_state": "RUNNING"},
            {"job_id": 10, "job_state": ["RUNNING"], "start_time": {"set": false, "number": 0},
             "exit_code": "weird", "nodes": "n[1-"},
            42
        ]});
        let jobs = parse_jobs(&body);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].id, "10");
        assert_eq!(jobs[0].start, None);
        assert_eq!((jobs[0].exit_code, jobs[0].signal), (None, None));
        assert_eq!(jobs[0].nodes, vec!["n[1-"]);
        assert!(parse_jobs(&serde_json::json!({"errors": []})).is_empty());
        assert_eq!(
            errors(&serde_json::json!({"errors": [{"description": "bad", "error_number": 1}]})),
            vec!["bad"]
        );
    }
}
