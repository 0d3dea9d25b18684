//! The real API server restarted (`scripts/cluster restart-apiserver`): every watch and
//! connection drops, and the new server's watch cache starts from the current revision, so a
//! watch resumed from an older one is told to re-list (410 Gone). In its own test binary:
//! restarting the shared control plane must not overlap the other real-cluster tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::cluster::ClusterHarness;
use support::{Received, root, sample_with_id, wait_for};

const LONG: Duration = Duration::from_secs(120);

fn restart_api_server() {
    let status = Command::new(root().join("scripts/cluster"))
        .arg("restart-apiserver")
        .status()
        .unwrap();
    assert!(status.success(), "scripts/cluster restart-apiserver failed");
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn of_kind<'a>(events: &'a [Received], suffix: &str) -> Vec<&'a Received> {
    events
        .iter()
        .filter(|e| e.event_type.ends_with(suffix))
        .collect()
}

/// How often the operator listed JobRuns (a watch started or re-listed), from the audit log.
fn jobrun_lists(h: &ClusterHarness) -> usize {
    h.requests()
        .iter()
        .filter(|r| r["verb"] == "list" && r["objectRef"]["resource"] == "jobruns")
        .count()
}

/// The run as the ingest created it: its metadata without what the API server assigns, no
/// status.
fn as_created(run: &Value) -> Value {
    let mut run = run.clone();
    let object = run.as_object_mut().unwrap();
    object.remove("status");
    let metadata = object["metadata"].as_object_mut().unwrap();
    for assigned in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        metadata.remove(assigned);
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_go_on_across_an_api_server_restart_and_a_relist() {
    let dir = std::env::temp_dir().join(format!("je-cluster-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - name: one task\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n      - name: only\n        image: job-executor.test/sleep\n        args: [\"4\"]\n",
    )
    .unwrap();
    let h = ClusterHarness::start("restart", &dir, &[]).await;

    // Runs whose tasks are running when the API server goes away; they end while it is down.
    let running = ["restart-1", "restart-2", "restart-3"];
    for id in running {
        let response = h
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 202, "{id}: {:?}", response.body);
    }
    h.eventually("the three Jobs to be created", LONG, || {
        h.jobs_created().len() == running.len()
    })
    .await;
    restart_api_server();
    // An event right after: the operator's connections come back on their own (a 503 until
    // then, which a sender retries).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = h
            .post_event(&sample_with_id("test.triggered.json", "restart-4"))
            .await;
        if response.status == 202 {
            break;
        }
        assert!(
            response.status == 503 && std::time::Instant::now() < deadline,
            "{:?}",
            response.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ids = ["restart-1", "restart-2", "restart-3", "restart-4"];
    for id in ids {
        h.wait_succeeded(id, LONG).await;
    }
    for id in ids {
        let events = h.sink.for_trigger(id);
        let started: BTreeSet<&str> = of_kind(&events, ".started")
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        let finished: BTreeSet<&str> = of_kind(&events, ".finished")
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        // A delivery whose record was lost to the outage may be repeated, with the same id.
        assert_eq!(started.len(), 1, "{id}: {events:?}");
        assert_eq!(finished.len(), 1, "{id}: {events:?}");
    }
    let jobs = h.jobs_created();
    let unique: BTreeSet<&String> = jobs.iter().collect();
    assert_eq!(jobs.len(), ids.len(), "one Job per run: {jobs:?}");
    assert_eq!(unique.len(), jobs.len(), "no Job created twice: {jobs:?}");

    // A finished run deleted and created again under its name (the same event redelivered
    // after retention removed the first run) while the operator did not watch: it learns of
    // neither from a watch event, only by re-listing, which finds a run of the same name.
    let id = "relist-1";
    let response = h
        .post_event(&sample_with_id("test.triggered.json", id))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    h.wait_finished(id, LONG).await;
    let find = || {
        h.jobruns()
            .into_iter()
            .find(|run| run["spec"]["event"]["id"] == id)
    };
    h.eventually("the delivery to be recorded", LONG, || {
        find().is_some_and(|run| run["status"]["finished"]["state"] == "Delivered")
    })
    .await;
    let first = find().unwrap();
    let name = first["metadata"]["name"].as_str().unwrap().to_string();
    let first_uid = first["metadata"]["uid"].as_str().unwrap().to_string();
    let pid = h.pid().unwrap();
    let listed = jobrun_lists(&h);
    signal(pid, "-STOP");
    restart_api_server();
    h.kubectl(&["delete", "jobruns.job-executor.dev", &name, "--wait=true"]);
    h.eventually(
        "the first run's Jobs and files to be collected",
        LONG,
        || {
            ["jobs", "configmaps"].iter().all(|resource| {
                h.list(resource).iter().all(|object| {
                    object["metadata"]["ownerReferences"][0]["uid"].as_str()
                        != Some(first_uid.as_str())
                })
            })
        },
    )
    .await;
    let file = dir.join("run.json");
    std::fs::write(&file, serde_json::to_vec(&as_created(&first)).unwrap()).unwrap();
    h.kubectl(&["create", "-f", file.to_str().unwrap()]);
    signal(pid, "-CONT");
    wait_for("the operator to re-list its runs", LONG, || {
        jobrun_lists(&h) > listed
    })
    .await;
    wait_for("the run created again to start", LONG, || {
        of_kind(&h.sink.for_trigger(id), ".started").len() >= 2
    })
    .await;
    wait_for("the run created again to finish", LONG, || {
        of_kind(&h.sink.for_trigger(id), ".finished").len() >= 2
    })
    .await;
    let run = find().unwrap();
    assert_ne!(run["metadata"]["uid"], first["metadata"]["uid"]);
    assert_eq!(run["status"]["phase"], "Succeeded", "{run}");
}
