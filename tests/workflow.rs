//! The workflow features, end to end through the binary, each scenario on kube-sim and on the
//! real control plane. Tasks as a graph (`needs`): independent tasks run at the same time, a
//! task that needs others starts only once they all succeeded, and a failure skips what needs
//! it while the rest finishes. Cancellation with `kubectl annotate` (also while the operator
//! restarts) and the action's timeout: the running Job is deleted, what follows never starts,
//! and `.finished` says why. Concurrency groups: a queue of one run at a time in arrival order
//! across a SIGKILL, `cancel-in-progress` and `skip`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

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

    // The run's history, as docs/operator.md shows it: Kubernetes Events (published in the
    // background: the last ones may follow the `.finished` by a moment).
    let name = run["metadata"]["name"].as_str().unwrap().to_string();
    let history = support::doc_sh_block("docs/operator.md", "### A run's history");
    let expected = [
        (
            "Normal",
            "Accepted",
            "(sh.keptn.event.test.triggered) runs action 'diamond'",
        ),
        ("Normal", "Started", "the run started"),
        ("Normal", "TaskStarted", "task 'a' started: Job "),
        ("Normal", "TaskSucceeded", "task 'a' succeeded"),
        ("Normal", "TaskStarted", "task 'b' started: Job "),
        ("Normal", "TaskStarted", "task 'c' started: Job "),
        ("Warning", "TaskFailed", "task 'b' failed: "),
        ("Normal", "TaskSucceeded", "task 'c' succeeded"),
        (
            "Normal",
            "TaskSkipped",
            "task 'd' skipped: it needs 'b', which failed",
        ),
        ("Warning", "Failed", "Task 'a' finished"),
        ("Normal", "Delivered", ".started ("),
        ("Normal", "Delivered", ".finished ("),
    ];
    let mut described = String::new();
    let missing = |described: &str| -> Vec<(&str, &str, &str)> {
        expected
            .iter()
            .filter(|(type_, reason, note)| {
                !described.lines().any(|line| {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    words.first() == Some(type_)
                        && words.get(1) == Some(reason)
                        && line.contains(note)
                })
            })
            .copied()
            .collect()
    };
    support::wait_for("the run's history", long, || {
        described = server.admin_shell(&history, &[("RUN", &name)]);
        missing(&described).is_empty()
    })
    .await;
    assert!(described.contains("Events:"), "{described}");
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

/// Three tasks one after the other; the second sleeps 30 s. With an action `timeout` if given.
fn three_steps(name: &str, timeout: Option<&str>) -> PathBuf {
    let dir = support::fresh_dir(&format!("workflow-config-{name}"));
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    let timeout = timeout.map_or(String::new(), |t| format!("    timeout: {t}\n"));
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        format!(
            r#"apiVersion: v2
actions:
  - name: three steps
    events: [{{name: sh.keptn.event.test.triggered}}]
{timeout}    tasks:
      - {{name: a, image: alpine}}
      - {{name: b, image: job-executor.test/sleep, args: ["30"]}}
      - {{name: c, image: alpine}}
"#
        ),
    )
    .unwrap();
    dir
}

/// The run's name, once task `index` runs.
async fn when_task_runs(server: &impl Replicas, index: usize, long: Duration) -> String {
    let mut name = String::new();
    support::wait_for("the task to run", long, || {
        let runs = server.jobruns();
        let Some(run) = runs.first() else {
            return false;
        };
        name = run["metadata"]["name"].as_str().unwrap().to_string();
        run["status"]["tasks"][index]["phase"] == "Running"
    })
    .await;
    name
}

/// The named Job is gone from the API server.
async fn until_job_gone(server: &impl Replicas, job: &str, long: Duration) {
    support::wait_for("the Job to be deleted", long, || {
        server
            .objects("batch", "jobs")
            .iter()
            .all(|j| j["metadata"]["name"] != job)
    })
    .await;
}

async fn a_cancel_during_the_second_task_stops_the_run(
    server: impl Replicas,
    long: Duration,
    during_a_restart: bool,
) {
    let mut replicas = server.start_replicas(&["cancel"]).await;
    let op = &mut replicas[0];
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "cancel-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let run = when_task_runs(&server, 1, long).await;
    // What docs/operator.md tells a user to type.
    let cancel = support::doc_sh_block("docs/operator.md", "### Cancelling a run");
    let cancelled_at = Instant::now();
    if during_a_restart {
        op.kill_operator();
        server.admin_shell(&cancel, &[("RUN", &run)]);
        op.start_operator().await;
    } else {
        server.admin_shell(&cancel, &[("RUN", &run)]);
    }
    let finished = op.wait_finished("cancel-1", long).await;
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(25),
        "the run ended without waiting for b's 30 s: {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    let message = finished.data["message"].as_str().unwrap();
    assert!(
        message.starts_with("Cancelled by alice: wrong artifact\n\nTask 'a' finished"),
        "{message}"
    );
    assert!(
        message.contains("Task 'b' cancelled by alice: wrong artifact"),
        "{message}"
    );
    assert!(
        message.ends_with(
            "Task 'c' skipped: the run was cancelled by alice: wrong artifact before it started"
        ),
        "{message}"
    );
    let run_object = server.jobruns().into_iter().next().expect("the run");
    assert_eq!(
        run_object["status"]["phase"],
        "Cancelled",
        "on {}",
        server.name()
    );
    assert_eq!(
        run_object["status"]["taskSummary"],
        "a:Succeeded b:Cancelled c:Skipped"
    );
    let jobs = server.jobs_created();
    assert_eq!(jobs.len(), 2, "c never started: {jobs:?}");
    until_job_gone(&server, &format!("{run}-1"), long).await;
}

async fn a_run_past_its_timeout_stops_and_fails(server: impl Replicas, long: Duration) {
    let replicas = server.start_replicas(&["timeout"]).await;
    let op = &replicas[0];
    let posted = Instant::now();
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "timeout-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let finished = op.wait_finished("timeout-1", long).await;
    let took = posted.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "the run is stopped when its 3 s are over, not when b's 30 s are: {took:?}"
    );
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    let message = finished.data["message"].as_str().unwrap();
    assert_eq!(
        message
            .lines()
            .filter(|l| l.starts_with("Task ") || l.starts_with("The "))
            .collect::<Vec<_>>(),
        [
            "The action's timeout of 3s passed",
            "Task 'a' finished",
            "Task 'b' failed: stopped: the action's timeout of 3s passed",
            "Task 'c' skipped: the action's timeout of 3s passed before it started",
        ],
        "{message}"
    );
    let run = server.jobruns().into_iter().next().expect("the run");
    assert_eq!(run["status"]["phase"], "Failed", "on {}", server.name());
    let name = run["metadata"]["name"].as_str().unwrap();
    assert_eq!(server.jobs_created().len(), 2, "c never started");
    until_job_gone(&server, &format!("{name}-1"), long).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_second_task_stops_the_run_on_kube_sim() {
    let config = three_steps("cancel", None);
    let server = Harness::for_replicas(&config, &[]).await;
    a_cancel_during_the_second_task_stops_the_run(server, Duration::from_secs(30), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_a_restart_stops_the_run_on_the_real_control_plane() {
    let config = three_steps("cancel-cluster", None);
    let server = ClusterHarness::install("cancel", &config, &[]).await;
    a_cancel_during_the_second_task_stops_the_run(server, Duration::from_secs(120), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_timeout_stops_and_fails_on_kube_sim() {
    let config = three_steps("timeout", Some("3s"));
    let server = Harness::for_replicas(&config, &[]).await;
    a_run_past_its_timeout_stops_and_fails(server, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_timeout_stops_and_fails_on_the_real_control_plane() {
    let config = three_steps("timeout-cluster", Some("3s"));
    let server = ClusterHarness::install("timeout", &config, &[]).await;
    a_run_past_its_timeout_stops_and_fails(server, Duration::from_secs(120)).await;
}

/// A run whose first task waits for another run's Job in its way (a run of the same name
/// deleted with its Jobs orphaned, its event sent again) and whose timeout passes meanwhile:
/// the task is skipped without that Job's logs, and the Job, another run's, is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_halted_while_another_runs_job_is_in_its_way_leaves_that_job_alone() {
    let config = three_steps("in-the-way", Some("3s"));
    let server = Harness::for_replicas(&config, &["--never-started-timeout-seconds", "60"]).await;
    let replicas = server.start_replicas(&["in-the-way"]).await;
    let op = &replicas[0];
    let event = sample_with_id("test.triggered.json", "in-the-way");
    let run = job_executor::names::run_name(
        &job_executor::event::CloudEvent::from_value(event.clone()).unwrap(),
        0,
    );
    // The Job an earlier run of the name left, orphaned: it ran, and wrote a line.
    let left: k8s_openapi::api::batch::v1::Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{run}-0"), "labels": {
            job_executor::labels::MANAGED_BY_LABEL: job_executor::labels::MANAGED_BY,
            job_executor::labels::RUN: run,
        }},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "task", "image": "alpine", "command": ["echo", "the earlier run's line"]}
        ]}}},
    }))
    .unwrap();
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(server.sim.client(), "default");
    jobs.create(&Default::default(), &left).await.unwrap();
    assert_eq!(op.post_event(&event).await.status, 202);
    let finished = op
        .wait_finished("in-the-way", Duration::from_secs(30))
        .await;
    let message = finished.data["message"].as_str().unwrap();
    assert!(
        message.contains("Task 'a' skipped: the action's timeout of 3s passed before it started"),
        "{message}"
    );
    assert!(!message.contains("the earlier run's line"), "{message}");
    assert!(
        jobs.get_opt(&format!("{run}-0")).await.unwrap().is_some(),
        "another run's Job is not deleted"
    );
    assert_eq!(
        server.jobs_created(),
        [format!("{run}-0")],
        "the run made none of its own"
    );
}

/// `build` publishes a version and a URL that `deploy` reads; `forgetful` declares an output it
/// never writes. Two actions of the same event.
fn outputs_config(name: &str) -> PathBuf {
    let dir = support::fresh_dir(&format!("workflow-config-{name}"));
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        r#"apiVersion: v2
actions:
  - name: ship
    events: [{name: sh.keptn.event.test.triggered}]
    tasks:
      - name: build
        image: job-executor.test/outputs
        args: ["version=1.2.3\nurl=http://carts.dev/v1.2.3"]
        outputs: [version, url]
      - name: deploy
        image: alpine
        cmd: [echo, "deploying $(VERSION) from $(URL)"]
        env:
          - {name: VERSION, valueFrom: output, value: build.version}
          - {name: URL, valueFrom: output, value: build.url}
  - name: forgetful
    events: [{name: sh.keptn.event.test.triggered}]
    tasks:
      - {name: build, image: alpine, outputs: [version]}
      - {name: deploy, image: alpine, env: [{name: V, valueFrom: output, value: build.version}]}
"#,
    )
    .unwrap();
    dir
}

async fn outputs_reach_later_tasks_and_finished(server: impl Replicas, long: Duration) {
    let replicas = server.start_replicas(&["outputs"]).await;
    let op = &replicas[0];
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "outputs-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let mut finished = Vec::new();
    support::wait_for("both .finished", long, || {
        finished = op
            .sink
            .for_trigger("outputs-1")
            .into_iter()
            .filter(|e| e.event_type.ends_with(".finished"))
            .collect();
        finished.len() == 2
    })
    .await;
    let by_status = |status: &str| {
        finished
            .iter()
            .find(|e| e.data["status"] == status)
            .unwrap_or_else(|| panic!("a .finished {status}: {finished:?}"))
    };
    let shipped = by_status("succeeded");
    assert_eq!(
        shipped.data["outputs"],
        serde_json::json!({"build": {"version": "1.2.3", "url": "http://carts.dev/v1.2.3"}}),
        "on {}",
        server.name()
    );
    let message = shipped.data["message"].as_str().unwrap();
    assert!(
        message.contains("Task 'deploy' finished\nLogs:\n")
            && message.ends_with("\necho deploying 1.2.3 from http://carts.dev/v1.2.3"),
        "the values reached deploy's env: {message}"
    );
    let forgot = by_status("errored");
    let message = forgot.data["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Task 'build' failed: its outputs cannot be read: it did not write its output \
             \"version\" to /dev/termination-log\nLogs:\n"
        ) && !message.contains("Task 'deploy'"),
        "on {}: {message}",
        server.name()
    );
    assert!(forgot.data.get("outputs").is_none(), "{}", forgot.data);

    // The deploy Job of `ship` got the values as env vars.
    let runs = server.jobruns();
    let ship = runs
        .iter()
        .find(|r| r["spec"]["action"]["name"] == "ship")
        .unwrap();
    assert_eq!(
        ship["status"]["tasks"][0]["outputs"],
        serde_json::json!({"version": "1.2.3", "url": "http://carts.dev/v1.2.3"})
    );
    let deploy_job = format!("{}-1", ship["metadata"]["name"].as_str().unwrap());
    let jobs = server.objects("batch", "jobs");
    let job = jobs
        .iter()
        .find(|j| j["metadata"]["name"] == deploy_job.as_str())
        .unwrap_or_else(|| panic!("{deploy_job}"));
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(value("VERSION"), Some(serde_json::json!("1.2.3")));
    assert_eq!(
        value("URL"),
        Some(serde_json::json!("http://carts.dev/v1.2.3"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_reach_later_tasks_and_finished_on_kube_sim() {
    let config = outputs_config("outputs");
    let server = Harness::for_replicas(&config, &[]).await;
    outputs_reach_later_tasks_and_finished(server, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_reach_later_tasks_and_finished_on_the_real_control_plane() {
    let config = outputs_config("outputs-cluster");
    let server = ClusterHarness::install("outputs", &config, &[]).await;
    outputs_reach_later_tasks_and_finished(server, Duration::from_secs(120)).await;
}

/// One action on the test event, in the concurrency group `deploy/{project}/{stage}/{service}`
/// (one place) with `policy`; its task sleeps `seconds`.
fn grouped_config(name: &str, policy: &str, seconds: u32) -> PathBuf {
    let dir = support::fresh_dir(&format!("workflow-config-{name}"));
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        format!(
            r#"apiVersion: v2
actions:
  - name: deploy
    events: [{{name: sh.keptn.event.test.triggered}}]
    concurrency:
      group: "deploy/{{project}}/{{stage}}/{{service}}"
      policy: {policy}
    tasks:
      - {{name: rollout, image: job-executor.test/sleep, args: ["{seconds}"]}}
"#
        ),
    )
    .unwrap();
    dir
}

/// The group's label value, as `kubectl get jobruns -l` selects it.
const GROUP_LABEL: &str = "deploy-sockshop-dev-carts";

/// A run of a group: its event's id, its name, phase, and its task's recorded start and end.
#[derive(Debug)]
struct GroupRun {
    id: String,
    name: String,
    phase: String,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
}

/// The runs, in the order their events arrived.
fn queue_of(server: &impl Replicas) -> Vec<GroupRun> {
    let mut runs = server.jobruns();
    runs.sort_by_key(|r| {
        r["spec"]["arrivedAt"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
    });
    runs.iter()
        .map(|run| {
            let task = &run["status"]["tasks"][0];
            let time = |key: &str| task[key].as_str().and_then(|t| t.parse().ok());
            GroupRun {
                id: run["spec"]["event"]["id"].as_str().unwrap().to_string(),
                name: run["metadata"]["name"].as_str().unwrap().to_string(),
                phase: run["status"]["phase"].as_str().unwrap_or("").to_string(),
                start: time("startTime"),
                end: time("completionTime"),
            }
        })
        .collect()
}

async fn a_group_of_one_runs_its_queue_in_arrival_order(server: impl Replicas, long: Duration) {
    let mut replicas = server.start_replicas(&["queue"]).await;
    let op = &mut replicas[0];
    let ids: Vec<String> = (1..=5).map(|i| format!("queue-{i}")).collect();
    for id in &ids {
        let response = op
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
    }
    // The second runs, three wait.
    support::wait_for("the second run to start", long, || {
        let queue = queue_of(&server);
        queue.len() == 5 && queue[1].phase == "Running"
    })
    .await;
    // What docs/operator.md tells a user to type to see the queue.
    let listing = server.admin_shell(
        &support::doc_sh_block("docs/operator.md", "### Concurrency groups"),
        &[("GROUP", GROUP_LABEL)],
    );
    let column = (listing
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace())
    .position(|name| name == "PHASE")
    .unwrap_or_else(|| panic!("no PHASE column: {listing}"));
    let phases: Vec<&str> = listing
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(column))
        .collect();
    assert_eq!(phases.len(), 5, "{listing}");
    let queued = phases.iter().filter(|p| **p == "Queued").count();
    assert!(
        queued >= 2 && phases[5 - queued..].iter().all(|p| *p == "Queued"),
        "the runs that wait are the last to arrive, shown Queued: {listing}"
    );
    // The operator is killed while three wait, and comes back.
    op.kill_operator();
    op.start_operator().await;
    for id in &ids {
        let finished = op.wait_finished(id, long).await;
        assert_eq!(
            finished.data["status"], "succeeded",
            "{id}: {}",
            finished.data
        );
        let sent = op.sink.for_trigger(id);
        assert_eq!(
            sent.iter()
                .filter(|e| e.event_type.ends_with(".started"))
                .count(),
            1,
            "{id}: {sent:?}"
        );
    }
    let queue = queue_of(&server);
    assert_eq!(
        queue.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids,
        "arrival order is event order"
    );
    for pair in queue.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        assert!(
            earlier.end.unwrap() <= later.start.unwrap(),
            "one at a time, in arrival order, on {}: {earlier:?} ends before {later:?} starts",
            server.name()
        );
    }
    let mut jobs = server.jobs_created();
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), 5, "each run's Job once: {jobs:?}");
}

async fn a_newer_run_cancels_the_one_in_progress(server: impl Replicas, long: Duration) {
    let replicas = server.start_replicas(&["newest"]).await;
    let op = &replicas[0];
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "newest-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let first = when_task_runs(&server, 0, long).await;
    // Sampled until the newer run is done: the older run's pod (it runs on while it stops)
    // and the newer run's Job never exist at once.
    let older_job = format!("{first}-0");
    let done = std::sync::atomic::AtomicBool::new(false);
    let sampler = async {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let newer_job = server.objects("batch", "jobs").iter().any(|job| {
                job["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| name != older_job)
            });
            let older_pod = newer_job
                && server.objects("", "pods").iter().any(|pod| {
                    pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == older_job.as_str()
                });
            if older_pod {
                return Some(server.objects("", "pods"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    };
    let flow = async {
        let response = op
            .post_event(&sample_with_id("test.triggered.json", "newest-2"))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
        let cancelled = op.wait_finished("newest-1", long).await;
        let finished = op.wait_finished("newest-2", long).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (cancelled, finished)
    };
    let (overlap, (cancelled, finished)) = tokio::join!(sampler, flow);
    assert!(
        overlap.is_none(),
        "the newer run's Job was made while the older run's pod was there, on {}: {overlap:#?}",
        server.name()
    );
    let second = queue_of(&server)[1].name.clone();
    assert_eq!(cancelled.data["status"], "errored", "{}", cancelled.data);
    let message = cancelled.data["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "Cancelled by the newer run {second} of the concurrency group \
             \"deploy/sockshop/dev/carts\"\n\nTask 'rollout' cancelled by the newer run {second}"
        )),
        "{message}"
    );
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let queue = queue_of(&server);
    assert_eq!(
        (queue[0].phase.as_str(), queue[1].phase.as_str()),
        ("Cancelled", "Succeeded"),
        "on {}",
        server.name()
    );
    assert!(
        queue[0].end.unwrap() <= queue[1].start.unwrap(),
        "the newer run starts once the older one stopped: {queue:?}"
    );
    until_job_gone(&server, &format!("{first}-0"), long).await;
}

async fn a_run_of_a_full_group_that_skips_never_starts(server: impl Replicas, long: Duration) {
    let replicas = server.start_replicas(&["skip"]).await;
    let op = &replicas[0];
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "skip-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let first = when_task_runs(&server, 0, long).await;
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "skip-2"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let skipped = op.wait_finished("skip-2", long).await;
    assert_eq!(skipped.data["status"], "errored", "{}", skipped.data);
    assert_eq!(
        skipped.data["message"],
        format!(
            "Skipped as the concurrency group \"deploy/sockshop/dev/carts\" was full (running: \
             {first})\n\nTask 'rollout' skipped: the concurrency group \
             \"deploy/sockshop/dev/carts\" was full (running: {first})"
        ),
        "on {}",
        server.name()
    );
    let finished = op.wait_finished("skip-1", long).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let queue = queue_of(&server);
    assert_eq!(
        (queue[0].phase.as_str(), queue[1].phase.as_str()),
        ("Succeeded", "Cancelled")
    );
    assert_eq!(
        server.jobs_created().len(),
        1,
        "the skipped run made no Job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_one_runs_its_queue_in_arrival_order_on_kube_sim() {
    let config = grouped_config("queue", "queue", 3);
    let server = Harness::for_replicas(&config, &[]).await;
    a_group_of_one_runs_its_queue_in_arrival_order(server, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_one_runs_its_queue_in_arrival_order_on_the_real_control_plane() {
    let config = grouped_config("queue-cluster", "queue", 3);
    let server = ClusterHarness::install("queue", &config, &[]).await;
    a_group_of_one_runs_its_queue_in_arrival_order(server, Duration::from_secs(180)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_run_cancels_the_one_in_progress_on_kube_sim() {
    let config = grouped_config("newest", "cancel-in-progress", 5);
    let server = Harness::for_replicas(&config, &[]).await;
    a_newer_run_cancels_the_one_in_progress(server, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_run_cancels_the_one_in_progress_on_the_real_control_plane() {
    let config = grouped_config("newest-cluster", "cancel-in-progress", 5);
    let server = ClusterHarness::install("newest", &config, &[]).await;
    a_newer_run_cancels_the_one_in_progress(server, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_a_full_group_that_skips_never_starts_on_kube_sim() {
    let config = grouped_config("skip", "skip", 5);
    let server = Harness::for_replicas(&config, &[]).await;
    a_run_of_a_full_group_that_skips_never_starts(server, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_a_full_group_that_skips_never_starts_on_the_real_control_plane() {
    let config = grouped_config("skip-cluster", "skip", 5);
    let server = ClusterHarness::install("skip", &config, &[]).await;
    a_run_of_a_full_group_that_skips_never_starts(server, Duration::from_secs(120)).await;
}

/// The run holding a group of one finishes while the run watch is down, and the watch's history
/// is compacted meanwhile: the run leaves the watch without a deletion event (a done run is no
/// longer watched), found gone only when the watch lists again. The queued run is let in then:
/// the listing replaces the cache that admission reads the other members from (and the group's
/// members are rebuilt from it), and each listed run is reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_admits_its_queue_when_the_holder_left_during_a_relist() {
    let config = grouped_config("relist", "queue", 1);
    let server = Harness::for_replicas(&config, &[]).await;
    server.sim.runtime().set(
        kube_sim::ImageRule::image("job-executor.test/sleep*"),
        kube_sim::Behavior::hold(),
    );
    let mut replicas = server.start_replicas(&["relist"]).await;
    let op = &mut replicas[0];
    let long = Duration::from_secs(60);
    for id in ["holder", "queued"] {
        let response = op
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
    }
    support::wait_for("the holder to run and the other to queue", long, || {
        let queue = queue_of(&server);
        queue.len() == 2 && queue[0].phase == "Running" && queue[1].phase == "Queued"
    })
    .await;
    support::wait_for("the holder's task to run", long, || {
        !server.sim.runtime().held().is_empty()
    })
    .await;
    // The run watch goes down, and stays down while the holder finishes.
    server.fail_watches("jobruns");
    server.sim.release(&server.sim.runtime().held()[0].1);
    op.wait_finished("holder", long).await;
    support::wait_for("the holder's delivery to be recorded", long, || {
        queue_of(&server)[0].phase == "Succeeded"
            && server.jobruns().iter().any(|run| {
                run["spec"]["event"]["id"] == "holder"
                    && run["status"]["finished"]["state"] == "Delivered"
            })
    })
    .await;
    // Its history expired: the watch comes back by listing the runs, without the holder.
    server.sim.runtime().clear();
    server.relist_watches();
    let finished = op.wait_finished("queued", long).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
}
