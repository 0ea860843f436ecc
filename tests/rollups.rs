//! Rollups (issue 19) through the real router and store, on SQLite and on PostgreSQL: 5-minute
//! buckets against hand-computed min / mean / max (per node, per GPU), the `resolution`
//! parameter (validation, `auto`'s choice), raw samples expiring under a job whose record and
//! report stay as they were, and passes that are idempotent and survive being cut off.

mod common;

use chrono::{DateTime, Duration, DurationRound, Utc};
use jobscope::domain::report::Thresholds;
use jobscope::domain::rollup;
use jobscope::store::rollups::Retired;
use serde_json::{json, Value};

/// A 5-minute boundary `days` days ago.
fn base(days: i64) -> DateTime<Utc> {
    (Utc::now() - Duration::days(days))
        .duration_trunc(Duration::minutes(5))
        .unwrap()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

async fn start(app: &common::TestApp, id: &str, nodes: &[&str], at: DateTime<Utc>) {
    let body = json!({"job_id": id, "user": "alice", "node_list": nodes, "timestamp": ts(at),
                      "cpu_allocation": 4, "memory_allocation_mb": 4096, "gpu_allocation": 2});
    app.post_event("job-started", &body).await.expect(200);
}

async fn finish(app: &common::TestApp, id: &str, at: DateTime<Utc>) {
    let body = json!({"job_id": id, "exit_code": 0, "timestamp": ts(at)});
    app.post_event("job-finished", &body).await.expect(200);
}

/// One agent sample: CPU %, memory bytes, and GPU utilizations by index.
fn item(id: &str, at: DateTime<Utc>, cpu: f64, mem: u64, gpus: &[(u32, f64)]) -> Value {
    let gpus: Vec<Value> = gpus
        .iter()
        .map(|(i, u)| {
            json!({"index": i, "vendor": "nvidia", "utilization_percent": u,
                             "memory_used_bytes": 1000, "processes": []})
        })
        .collect();
    json!({"job_id": id, "collected_at": ts(at), "cpu_usage_percent": cpu,
           "memory_current_bytes": mem, "gpus": gpus})
}

async fn send(app: &common::TestApp, node: &str, items: Vec<Value>) {
    let n = items.len();
    let at = items[0]["collected_at"].clone();
    let body = json!({"node": node, "collected_at": at, "interval_seconds": 15, "jobs": items});
    let reply = app
        .request("POST", "/v1/samples", Some(&body), &[])
        .await
        .expect(200);
    assert_eq!(reply["accepted"], n, "{reply}");
}

fn figure(point: &Value, name: &str) -> (f64, f64, f64) {
    let f = &point[name];
    (
        f["min"].as_f64().unwrap_or(f64::NAN),
        f["mean"].as_f64().unwrap_or(f64::NAN),
        f["max"].as_f64().unwrap_or(f64::NAN),
    )
}

/// Job `r1` two days ago on nodes a and b: node a's first bucket holds three samples (CPU 10,
/// 30, 20; memory 1, 3, 2 MiB; GPU 0 at 50 and 70 in two of them), its second one (CPU 80);
/// node b one sample (CPU 5) in the first bucket.
async fn known_job(app: &common::TestApp) -> DateTime<Utc> {
    let t = base(2);
    start(app, "r1", &["a", "b"], t - Duration::minutes(1)).await;
    let mib = 1 << 20;
    send(
        app,
        "a",
        vec![
            item("r1", t, 10.0, mib, &[(0, 50.0)]),
            item("r1", t + Duration::seconds(60), 30.0, 3 * mib, &[(0, 70.0)]),
            item("r1", t + Duration::seconds(299), 20.0, 2 * mib, &[]),
            item("r1", t + Duration::seconds(300), 80.0, mib, &[]),
        ],
    )
    .await;
    send(
        app,
        "b",
        vec![item("r1", t + Duration::seconds(10), 5.0, mib, &[])],
    )
    .await;
    finish(app, "r1", t + Duration::minutes(10)).await;
    t
}

fn check_known_points(body: &Value, t: DateTime<Utc>) {
    assert_eq!(body["resolution"], "5m", "{body}");
    assert_eq!(body["bucket_seconds"], 300, "{body}");
    assert_eq!(body["total"], 3, "{body}");
    let points = body["points"].as_array().unwrap();
    // Newest first: a's second bucket, then the first bucket of a and of b.
    assert_eq!(
        points[0]["timestamp"],
        ts(t + Duration::minutes(5)).replace("+00:00", "Z")
    );
    assert_eq!(points[0]["node"], "a");
    assert_eq!(figure(&points[0], "cpu_usage"), (80.0, 80.0, 80.0));
    let a = points
        .iter()
        .find(|p| p["node"] == "a" && p["samples"] == 3);
    let a = a.unwrap_or_else(|| panic!("node a's first bucket: {body}"));
    assert_eq!(figure(a, "cpu_usage"), (10.0, 20.0, 30.0));
    assert_eq!(figure(a, "memory_usage_mb"), (1.0, 2.0, 3.0));
    let mib = f64::from(1 << 20);
    assert_eq!(figure(a, "memory_usage_bytes"), (mib, 2.0 * mib, 3.0 * mib));
    let gpu = &a["gpus"][0];
    assert_eq!(gpu["index"], 0, "{a}");
    assert_eq!(figure(gpu, "utilization_percent"), (50.0, 60.0, 70.0));
    let b = points.iter().find(|p| p["node"] == "b").unwrap();
    assert_eq!(
        (b["samples"].clone(), figure(b, "cpu_usage")),
        (json!(1), (5.0, 5.0, 5.0))
    );
    assert!(b.get("gpus").is_none(), "{b}");
}

on_both_backends!(
    five_minute_points_are_min_mean_max_per_node_and_gpu,
    |app| {
        let t = known_job(app).await;
        // Folded from the raw samples (nothing is rolled up yet) ...
        let body = app
            .get("/v1/jobs/r1/metrics?resolution=5m")
            .await
            .expect(200);
        check_known_points(&body, t);
        assert!(body.get("raw_samples_since").is_none(), "{body}");
        // ... the same when the first bucket is stored and the second still read raw ...
        let pass = app.store.roll_up(t + Duration::minutes(7)).await.unwrap();
        assert_eq!(
            pass.rolled_until,
            Some(t + Duration::minutes(5)),
            "{pass:?}"
        );
        assert_eq!(app.rows_of("sample_rollups", "r1").await, 2);
        let split = app
            .get("/v1/jobs/r1/metrics?resolution=5m")
            .await
            .expect(200);
        assert_eq!(split, body);
        // ... and read back from the stored rollups.
        let pass = app.store.roll_up(Utc::now()).await.unwrap();
        assert_eq!((pass.jobs, pass.buckets), (1, 3), "{pass:?}");
        assert_eq!(app.rows_of("sample_rollups", "r1").await, 3);
        let stored = app
            .get("/v1/jobs/r1/metrics?resolution=5m")
            .await
            .expect(200);
        assert_eq!(stored, body);
        // One-minute buckets: node a's samples at t and t+60 s fall in separate ones.
        let body = app
            .get("/v1/jobs/r1/metrics?resolution=1m")
            .await
            .expect(200);
        assert_eq!(
            (body["resolution"].clone(), body["total"].clone()),
            (json!("1m"), json!(5))
        );
    }
);

on_both_backends!(resolution_is_validated_and_raw_is_unchanged, |app| {
    known_job(app).await;
    for bad in ["10m", "RAW", "1h", "x"] {
        app.get(&format!("/v1/jobs/r1/metrics?resolution={bad}"))
            .await
            .expect_error(
                400,
                "validation_error",
                "resolution must be one of raw, 1m, 5m, auto",
            );
    }
    let plain = app.get("/v1/jobs/r1/metrics").await.expect(200);
    assert_eq!(
        app.get("/v1/jobs/r1/metrics?resolution=raw")
            .await
            .expect(200),
        plain
    );
    assert_eq!(plain["total"], 5, "{plain}");
    assert!(plain.get("resolution").is_none(), "{plain}");
    app.get("/v1/jobs/nope/metrics?resolution=5m")
        .await
        .expect(404);
    app.get("/v1/jobs/nope/metrics?resolution=auto")
        .await
        .expect(404);
});

/// Retention with a day of raw samples and rollups kept since `rollups_before`.
async fn retire(store: &jobscope::store::Store, rollups_before: DateTime<Utc>) -> Retired {
    let before = Utc::now() - Duration::days(1);
    store
        .retire(before, rollups_before, Thresholds::site())
        .await
        .expect("retention")
}

/// `n` samples of job `id` on node a, `every` apart from `from`, in batches of 200.
async fn many(app: &common::TestApp, id: &str, from: DateTime<Utc>, every: Duration, n: i64) {
    let items: Vec<Value> = (0..n)
        .map(|i| item(id, from + every * i as i32, (i % 100) as f64, 1 << 20, &[]))
        .collect();
    for chunk in items.chunks(200) {
        send(app, "a", chunk.to_vec()).await;
    }
}

/// Job `id` on node a from `t` for `span`, with `n` samples `every` apart; its `auto` answer.
async fn auto_of(
    app: &common::TestApp,
    id: &str,
    t: DateTime<Utc>,
    span: Duration,
    (every, n): (Duration, i64),
) -> Value {
    start(app, id, &["a"], t).await;
    many(app, id, t, every, n).await;
    finish(app, id, t + span).await;
    let path = format!("/v1/jobs/{id}/metrics?resolution=auto");
    app.get(&path).await.expect(200)
}

on_both_backends!(auto_picks_the_finest_resolution_that_fits, |app| {
    // Few samples: the raw ones, marked as such.
    known_job(app).await;
    let body = app
        .get("/v1/jobs/r1/metrics?resolution=auto")
        .await
        .expect(200);
    assert_eq!(body["resolution"], "raw", "{body}");
    assert_eq!(body["total"], 5, "{body}");
    // 1,200 samples over 5 hours: 300 one-minute points fit.
    let every15 = (Duration::seconds(15), 1200);
    let body = auto_of(app, "m1", base(1), Duration::hours(5), every15).await;
    assert_eq!(body["resolution"], "1m", "{body}");
    assert_eq!(body["total"], 300, "{body}");
    // 1,100 samples over 7 days: 10,080 one-minute and 2,016 five-minute points do not fit,
    // 672 fifteen-minute ones do.
    let sparse = (Duration::seconds(550), 1100);
    let body = auto_of(app, "w1", base(8), Duration::days(7), sparse).await;
    assert_eq!(body["resolution"], "15m", "{body}");
    assert!(body["total"].as_i64().unwrap() <= 1000, "{body}");
    let samples: i64 = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["samples"].as_i64().unwrap())
        .sum();
    assert_eq!(samples, 1100);
});

on_both_backends!(
    expired_raw_samples_leave_the_job_and_its_report_as_they_were,
    |app| {
        let t = known_job(app).await;
        let job = app.get("/v1/jobs/r1").await.expect(200);
        let report = app.get("/v1/jobs/r1/report").await.expect(200);
        let five = app
            .get("/v1/jobs/r1/metrics?resolution=5m")
            .await
            .expect(200);
        assert!(
            job["totals"].is_object() && report["cpu"].is_object(),
            "{job} {report}"
        );

        // A day of retention: the job's samples (two days old) go.
        let retired = retire(&app.store, Utc::now() - Duration::days(90)).await;
        assert_eq!(retired.samples, 5, "{retired:?}");
        assert_eq!(retired.archived_jobs, 1, "{retired:?}");
        assert_eq!(app.sample_rows("r1").await, 0);

        assert_eq!(app.get("/v1/jobs/r1").await.expect(200), job);
        let mut after = app.get("/v1/jobs/r1/report").await.expect(200);
        let mut before = report.clone();
        for r in [&mut before, &mut after] {
            r.as_object_mut().unwrap().remove("computed_at");
        }
        assert_eq!(after, before);
        let raw = app.get("/v1/jobs/r1/metrics").await.expect(200);
        assert_eq!(raw["total"], 0, "{raw}");
        // The metrics route answers from the rollups, with the same figures.
        let mut now5 = app
            .get("/v1/jobs/r1/metrics?resolution=5m")
            .await
            .expect(200);
        assert!(now5["raw_samples_since"].is_string(), "{now5}");
        now5.as_object_mut().unwrap().remove("raw_samples_since");
        assert_eq!(now5, five);
        let auto = app
            .get("/v1/jobs/r1/metrics?resolution=auto")
            .await
            .expect(200);
        assert_eq!(auto["resolution"], "5m", "{auto}");
        check_known_points(&auto, t);

        // Rollups past their own retention go too.
        let retired = retire(&app.store, Utc::now()).await;
        assert_eq!(retired.rollups, 3, "{retired:?}");
    }
);

on_both_backends!(passes_are_idempotent_and_survive_being_cut_off, |app| {
    let t = known_job(app).await;
    let first = app.store.roll_up(Utc::now()).await.unwrap();
    let body = app
        .get("/v1/jobs/r1/metrics?resolution=5m")
        .await
        .expect(200);
    // Again: the same rows, not twice the samples.
    app.store.roll_up(Utc::now()).await.unwrap();
    // Cut off before its watermark was written: the next pass starts over and rewrites them.
    assert_eq!(
        app.execute("UPDATE rollup_state SET rolled_until = NULL", None)
            .await,
        1
    );
    let again = app.store.roll_up(Utc::now()).await.unwrap();
    assert_eq!(again.buckets, first.buckets);
    assert_eq!(app.rows_of("sample_rollups", "r1").await, 3);
    assert_eq!(
        app.get("/v1/jobs/r1/metrics?resolution=5m")
            .await
            .expect(200),
        body
    );

    // A restart (a new store on the same database) between the archive and the prune, then
    // retention twice: nothing lost, nothing doubled.
    let store = jobscope::store::Store::connect(&app.db.url).await.unwrap();
    let year = Utc::now() - Duration::days(365);
    retire(&store, year).await;
    let twice = retire(&store, year).await;
    assert_eq!((twice.samples, twice.archived_jobs), (0, 0), "{twice:?}");
    store.close().await;
    let mut after = app
        .get("/v1/jobs/r1/metrics?resolution=5m")
        .await
        .expect(200);
    after.as_object_mut().unwrap().remove("raw_samples_since");
    assert_eq!(after, body);
    check_known_points(&after, t);
});

/// Job `c1` on nodes a (with GPU 0) and b for 30 hours from `t`, a sample every 170 s on each
/// (whole-number figures, so sums do not depend on the order they are added in).
async fn long_job(app: &common::TestApp, t: DateTime<Utc>) {
    start(app, "c1", &["a", "b"], t).await;
    for (node, gpus) in [("a", &[(0, 0.0)][..]), ("b", &[][..])] {
        let items: Vec<Value> = (0..635)
            .map(|i| {
                let gpus: Vec<_> = gpus.iter().map(|(g, _)| (*g, (i % 7) as f64)).collect();
                item(
                    "c1",
                    t + Duration::seconds(170 * i),
                    (i % 100) as f64,
                    (i as u64 % 13) << 20,
                    &gpus,
                )
            })
            .collect();
        for chunk in items.chunks(200) {
            send(app, node, chunk.to_vec()).await;
        }
    }
    finish(app, "c1", t + Duration::hours(30)).await;
}

/// What the store answers for `c1` at each width, over the whole job and over a range whose
/// ends fall inside buckets.
async fn answers(app: &common::TestApp, t: DateTime<Utc>) -> Vec<Vec<rollup::Bucket>> {
    let mut all = Vec::new();
    let odd = (
        Some(t + Duration::seconds(4 * 3600 + 7 * 60 + 3)),
        Some(t + Duration::seconds(21 * 3600 + 52 * 60 + 10)),
    );
    for width in [300, 900, 1800, 3600, 3 * 3600, 86_400] {
        for (start, end) in [(None, None), odd] {
            let buckets = app.store.rolled_up("c1", start, end, width).await.unwrap();
            assert!(!buckets.is_empty(), "{width}");
            all.push(buckets);
        }
    }
    all
}

on_both_backends!(coarse_levels_answer_as_the_five_minute_buckets, |app| {
    let t = (Utc::now() - Duration::days(3))
        .duration_trunc(Duration::hours(1))
        .unwrap()
        + Duration::minutes(7);
    long_job(app, t).await;
    app.store.roll_up(Utc::now()).await.unwrap();
    // 15-minute and hourly buckets, per node.
    let coarse = app.rows_of("sample_rollups_coarse", "c1").await;
    assert_eq!(coarse, 2 * (121 + 31), "{coarse}");
    let with_coarse = answers(app, t).await;
    assert_eq!(
        with_coarse[2].len(),
        2 * 121,
        "15-minute points of two nodes"
    );
    // Without the coarse levels (as before the migration): the same answers.
    app.execute("UPDATE rollup_state SET coarse_from = NULL", None)
        .await;
    assert_eq!(answers(app, t).await, with_coarse);

    // A database migrated with its 5-minute rollups: no coarse buckets, built from a later
    // time on. The next pass folds the older 5-minute buckets (within its week), and the
    // answers are the same again.
    app.execute("DELETE FROM sample_rollups_coarse", None).await;
    app.execute("UPDATE rollup_state SET coarse_from = $1", Some(Utc::now()))
        .await;
    assert_eq!(answers(app, t).await, with_coarse);
    app.store.roll_up(Utc::now()).await.unwrap();
    assert_eq!(app.rows_of("sample_rollups_coarse", "c1").await, coarse);
    assert_eq!(answers(app, t).await, with_coarse);

    // Rollup retention takes whole hours from both levels.
    let cut = t + Duration::hours(10) + Duration::minutes(20);
    let retired = retire(&app.store, cut).await;
    assert!(retired.rollups > 0, "{retired:?}");
    let left = app
        .count(
            "SELECT COUNT(*) FROM sample_rollups_coarse WHERE job_id = $1 AND seconds = 3600",
            "c1",
        )
        .await;
    assert_eq!(
        left,
        2 * 21,
        "the hours from the 10th after the job's first one"
    );
});

on_both_backends!(late_samples_reach_the_coarse_levels, |app| {
    // A job sampled up to 11 minutes before the pass at `now`, 10 minutes past an hour, rolled
    // up; then a sample arrives late for the hour before (a bucket already rolled up, within the
    // relook) and the next pass folds it into the stored hour as well.
    let hour = (Utc::now() - Duration::days(1))
        .duration_trunc(Duration::hours(1))
        .unwrap();
    let now = hour + Duration::minutes(10);
    let t = now - Duration::hours(3);
    start(app, "l1", &["a"], t).await;
    many(app, "l1", t, Duration::seconds(60), 170).await;
    app.store.roll_up(now).await.unwrap();
    let before = app.store.rolled_up("l1", None, None, 3600).await.unwrap();
    let late = hour - Duration::minutes(10) + Duration::seconds(30);
    send(app, "a", vec![item("l1", late, 99.5, 1 << 20, &[])]).await;
    app.store.roll_up(now).await.unwrap();
    let after = app.store.rolled_up("l1", None, None, 3600).await.unwrap();
    let samples = |b: &[rollup::Bucket]| b.iter().map(|b| b.samples).sum::<i64>();
    assert_eq!(samples(&after), samples(&before) + 1);
    let max = after
        .iter()
        .map(|b| b.figures["cpu_usage"].max)
        .fold(0.0, f64::max);
    assert_eq!(max, 99.5);
    // And the coarse level agrees with the 5-minute buckets it is made of.
    app.execute("UPDATE rollup_state SET coarse_from = NULL", None)
        .await;
    assert_eq!(
        app.store.rolled_up("l1", None, None, 3600).await.unwrap(),
        after
    );
});
