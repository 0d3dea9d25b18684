//! The real API server frozen (SIGSTOP) for 20 s while events keep arriving. In its own test
//! binary: freezing the shared control plane must not overlap the other real-cluster tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::cluster::ClusterHarness;
use support::sample_with_id;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_api_server_answers_503_and_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("je-cluster-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - name: one task\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n      - name: only\n        image: alpine:3.20\n",
    )
    .unwrap();
    let h = ClusterHarness::start("outage", &dir, &["--store-timeout-seconds", "2"]).await;
    let apiserver = h.cluster.pid("APISERVER_PID").to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &apiserver])
            .status()
            .unwrap();
        assert!(status.success());
    };

    // Five events a second for 30 s; the API server frozen from 5 s to 25 s.
    let mut answers: BTreeMap<String, u16> = BTreeMap::new();
    let start = Instant::now();
    let (mut frozen, mut thawed) = (false, false);
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(30) {
        if !frozen && start.elapsed() >= Duration::from_secs(5) {
            signal("-STOP");
            frozen = true;
        }
        if frozen && !thawed && start.elapsed() >= Duration::from_secs(25) {
            signal("-CONT");
            thawed = true;
        }
        let id = format!("outage-{n}");
        n += 1;
        let sent = Instant::now();
        let response = h
            .post_event(&sample_with_id("test.triggered.json", &id))
            .await;
        slowest = slowest.max(sent.elapsed());
        answers.insert(id, response.status.as_u16());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !thawed {
        signal("-CONT");
    }
    let refused: Vec<&String> = answers
        .iter()
        .filter(|(_, status)| **status == 503)
        .map(|(id, _)| id)
        .collect();
    assert!(
        !refused.is_empty(),
        "the frozen API server was noticed: {answers:?}"
    );
    assert!(
        answers.values().all(|s| *s == 202 || *s == 503),
        "{answers:?}"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a sender waited {slowest:?}: the store timeout is 2 s"
    );

    // The senders retry what was refused, as the 503 asks; every event then finishes once.
    for id in &refused {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = h
                .post_event(&sample_with_id("test.triggered.json", id))
                .await;
            if response.status == 202 {
                break;
            }
            assert!(Instant::now() < deadline, "{id}: {:?}", response.body);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    for id in answers.keys() {
        let finished = h.wait_finished(id, Duration::from_secs(120)).await;
        assert_eq!(
            finished.data["status"], "succeeded",
            "{id}: {}",
            finished.data
        );
    }
    assert_eq!(h.jobruns().len(), answers.len(), "one run per event");
    let jobs = h.jobs_created();
    let mut unique = jobs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(jobs.len(), answers.len(), "one Job per run: {jobs:?}");
    assert_eq!(unique.len(), jobs.len());
}
