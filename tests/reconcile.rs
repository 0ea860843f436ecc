//! The slurmrestd reconciler against a real store (both backends), fed Slurm's job list from
//! fixtures: real captures of Debian's slurmrestd 22.05 and a hand-written v0.0.41 response.

mod common;

use jobscope::scheduler::slurm::jobs::{parse_jobs, SlurmJob};
use jobscope::scheduler::slurm::reconcile::{PassReport, Reconciler};
use serde_json::{json, Value};
use std::time::Duration;

fn fixture(name: &str) -> Vec<SlurmJob> {
    let path = format!(
        "{}/tests/fixtures/slurmrestd/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    parse_jobs(&serde_json::from_str::<Value>(&std::fs::read_to_string(path).unwrap()).unwrap())
}

fn ago(minutes: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339()
}

async fn state_of(app: &common::TestApp, id: &str) -> Value {
    let job = app.get(&format!("/v1/jobs/{id}")).await.expect(200);
    json!([
        job["state"],
        job["exit_code"],
        job["signal"],
        job["scheduler"]["raw_state"]
    ])
}

on_both_backends!(reconciler_confirms_creates_and_finalizes, |app| {
    // v0.0.41 fixture: 1 COMPLETED, 2 FAILED 3:0, 3 CANCELLED 0:15, 4 RUNNING, 5 TIMEOUT 0:15,
    // 6 OUT_OF_MEMORY 0:9, 7 cancelled while pending.
    let slurm = fixture("jobs-v0.0.41.handwritten.json");
    let prolog = |id: &str, at: String| json!({"job_id": id, "user": "root", "node_list": ["vm"], "timestamp": at});
    // 2: prolog only (its epilog was lost). 3 and 5: the epilog guessed success (0:0).
    // 99: running here, unknown to Slurm for long; 98: just started, not listed yet.
    for id in ["2", "3", "5", "99"] {
        app.post_event("job-started", &prolog(id, ago(10)))
            .await
            .expect(200);
    }
    app.post_event("job-started", &prolog("98", ago(0)))
        .await
        .expect(200);
    for id in ["3", "5"] {
        app.post_event(
            "job-finished",
            &json!({"job_id": id, "exit_code": 0, "signal": 0}),
        )
        .await
        .expect(200);
        assert_eq!(
            state_of(app, id).await[0],
            "completed",
            "the epilog's guess"
        );
    }

    let mut reconciler = Reconciler::default();
    let report = reconciler
        .pass(&slurm, &app.store, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        report,
        PassReport {
            confirmed: 3,
            created: 3,
            vanished: 1
        }
    );
    assert_eq!(
        state_of(app, "1").await,
        json!(["completed", 0, 0, "COMPLETED"]),
        "created finished"
    );
    assert_eq!(state_of(app, "2").await, json!(["failed", 3, 0, "FAILED"]));
    assert_eq!(
        state_of(app, "3").await,
        json!(["cancelled", 0, 15, "CANCELLED"])
    );
    assert_eq!(
        state_of(app, "4").await,
        json!(["running", null, null, "RUNNING"]),
        "created running"
    );
    assert_eq!(
        state_of(app, "5").await,
        json!(["cancelled", 0, 15, "TIMEOUT"])
    );
    assert_eq!(
        state_of(app, "6").await,
        json!(["failed", 0, 9, "OUT_OF_MEMORY"]),
        "created finished"
    );
    app.get("/v1/jobs/7").await.expect(404);
    assert_eq!(
        state_of(app, "99").await,
        json!(["failed", null, null, "VANISHED"])
    );
    assert_eq!(
        state_of(app, "98").await[0],
        "running",
        "within the grace period"
    );

    // Every change by the reconciler is in the audit trail, after the hooks' rows.
    let trail: Vec<String> = app
        .audit("3")
        .await
        .iter()
        .map(|a| a["changed_by"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(trail, ["slurm-prolog", "slurm-epilog", "slurm-reconciler"]);
    let four = app.get("/v1/jobs/4").await.expect(200);
    assert_eq!(four["scheduler"]["extra"]["job_name"], "run");
    assert_eq!(four["cluster_name"], "jobscope-dev");
    assert_eq!(app.audit("4").await[0]["changed_by"], "slurm-reconciler");

    // A second pass changes nothing; a late epilog cannot undo Slurm's word.
    let events = app.event_count().await;
    let again = reconciler
        .pass(&slurm, &app.store, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again, PassReport::default());
    assert_eq!(app.event_count().await, events);
    app.post_event(
        "job-finished",
        &json!({"job_id": "5", "exit_code": 0, "signal": 0}),
    )
    .await
    .expect(200);
    assert_eq!(state_of(app, "5").await[0], "cancelled");
});

on_both_backends!(reconciler_reads_real_22_05_responses, |app| {
    // Captured from Debian's slurmrestd: 3 was cancelled while running, 5 timed out.
    for v in ["v0.0.36", "v0.0.37", "v0.0.38"] {
        let slurm = fixture(&format!("jobs-{v}.json"));
        let mut reconciler = Reconciler::default();
        reconciler
            .pass(&slurm, &app.store, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            state_of(app, "3").await,
            json!(["cancelled", 0, 15, "CANCELLED"]),
            "{v}"
        );
        assert_eq!(
            state_of(app, "5").await,
            json!(["cancelled", 0, 15, "TIMEOUT"]),
            "{v}"
        );
        assert_eq!(
            state_of(app, "2").await,
            json!(["failed", 3, 0, "FAILED"]),
            "{v}"
        );
        let gpu = app.get("/v1/jobs/4").await.expect(200);
        assert_eq!(gpu["state"], "running");
        assert_eq!(gpu["scheduler"]["partition"], "debug");
    }
});
