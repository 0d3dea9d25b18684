//! Tasks as a graph (`needs`), end to end through the binary, each scenario on kube-sim and on
//! the real control plane: independent tasks run at the same time, a task that needs others
//! starts only once they all succeeded, and a failure skips what needs it while the rest
//! finishes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use support::cluster::ClusterHarness;
use support::{Harness, Replicas, sample_with_id};

/// The diamond `a` → (`b`, `c`) → `d` on the test event; `b` runs `b_image`, `c` sleeps 2 s.
fn diamond(name: &str, b_image: &str) -> PathBuf {
    let dir = support::fresh_dir(&format!("workflow-config-{name}"));
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        format!(
            r#"apiVersion: v2
actions:
  - name: diamond
    events: [{{name: sh.keptn.event.test.triggered}}]
    tasks:
      - {{name: a, image: alpine}}
      - {{name: b, image: "{b_image}", args: ["2"], needs: [a]}}
      - {{name: c, image: job-executor.test/sleep, args: ["2"], needs: [a]}}
      - {{name: d, image: alpine, needs: [b, c]}}
"#
        ),
    )
    .unwrap();
    dir
}

/// Each task's name, phase and recorded start and end.
fn tasks_of(run: &Value) -> Vec<(String, String, Option<Timestamp>, Option<Timestamp>)> {
    let time = |task: &Value, key: &str| task[key].as_str().and_then(|t| t.parse().ok());
    run["status"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| {
            (
                task["name"].as_str().unwrap().to_string(),
                task["phase"].as_str().unwrap().to_string(),
                time(task, "startTime"),
                time(task, "completionTime"),
            )
        })
        .collect()
}

async fn a_diamond_runs_its_middle_at_once_and_joins(server: impl Replicas, long: Duration) {
    let replicas = server.start_replicas(&["diamond"]).await;
    let op = &replicas[0];
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "diamond-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let finished = op.wait_finished("diamond-1", long).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let message = finished.data["message"].as_str().unwrap();
    for task in ["a", "b", "c", "d"] {
        assert!(
            message.contains(&format!("Task '{task}' finished")),
            "{message}"
        );
    }

    let run = server.jobruns().into_iter().next().expect("the run");
    let tasks = tasks_of(&run);
    let times = |name: &str| {
        let (_, phase, start, end) = tasks.iter().find(|t| t.0 == name).unwrap();
        assert_eq!(phase, "Succeeded", "{name}: {tasks:?}");
        (start.unwrap(), end.unwrap())
    };
    let (a, b, c, d) = (times("a"), times("b"), times("c"), times("d"));
    assert!(b.0 >= a.1 && c.0 >= a.1, "b and c start after a: {tasks:?}");
    assert!(
        b.0 < c.1 && c.0 < b.1,
        "b and c overlap in time on {}: {tasks:?}",
        server.name()
    );
    assert!(d.0 >= b.1 && d.0 >= c.1, "d starts after both: {tasks:?}");
    assert_eq!(
        run["status"]["taskSummary"],
        "a:Succeeded b:Succeeded c:Succeeded d:Succeeded"
    );
    let mut jobs = server.jobs_created();
    jobs.sort();
    assert_eq!(jobs.len(), 4, "each task's Job once: {jobs:?}");
    jobs.dedup();
    assert_eq!(jobs.len(), 4, "each task's Job once");
}

async fn a_failure_skips_what_needs_it(server: impl Replicas, long: Duration) {
    let replicas = server.start_replicas(&["diamond-fail"]).await;
    let op = &replicas[0];
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "diamond-fail-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let finished = op.wait_finished("diamond-fail-1", long).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    let message = finished.data["message"].as_str().unwrap();
    assert!(message.contains("Task 'b' failed"), "{message}");
    assert!(
        message.contains("Task 'c' finished"),
        "c, which does not need b, finishes: {message}"
    );
    assert!(
        message.contains("Task 'd' skipped: it needs 'b', which failed"),
        "{message}"
    );
    let run = server.jobruns().into_iter().next().expect("the run");
    let phases: Vec<(String, String)> = tasks_of(&run)
        .into_iter()
        .map(|(name, phase, _, _)| (name, phase))
        .collect();
    let expected = [
        ("a", "Succeeded"),
        ("b", "Failed"),
        ("c", "Succeeded"),
        ("d", "Skipped"),
    ];
    assert_eq!(
        phases,
        expected.map(|(n, p)| (n.to_string(), p.to_string())),
        "on {}",
        server.name()
    );
    assert_eq!(run["status"]["phase"], "Failed");
    assert_eq!(server.jobs_created().len(), 3, "d never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_runs_its_middle_at_once_and_joins_on_kube_sim() {
    let config = diamond("ok", "job-executor.test/sleep");
    let server = Harness::for_replicas(&config, &[]).await;
    a_diamond_runs_its_middle_at_once_and_joins(server, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_runs_its_middle_at_once_and_joins_on_the_real_control_plane() {
    let config = diamond("ok-cluster", "job-executor.test/sleep");
    let server = ClusterHarness::install("diamond", &config, &[]).await;
    a_diamond_runs_its_middle_at_once_and_joins(server, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_skips_what_needs_it_on_kube_sim() {
    let config = diamond("fail", "job-executor.test/fail");
    let server = Harness::for_replicas(&config, &[]).await;
    a_failure_skips_what_needs_it(server, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_skips_what_needs_it_on_the_real_control_plane() {
    let config = diamond("fail-cluster", "job-executor.test/fail");
    let server = ClusterHarness::install("diamond-fail", &config, &[]).await;
    a_failure_skips_what_needs_it(server, Duration::from_secs(120)).await;
}
