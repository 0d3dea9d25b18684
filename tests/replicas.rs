//! Several replicas: every one receives events, the one holding the Lease reconciles, and a
//! leader that lost the Lease makes no side effect (the real binaries against kube-sim).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{Harness, Operator, sample_with_id};

/// Short lease timings, so a takeover happens within seconds.
const LEASE: [&str; 6] = [
    "--lease-duration-seconds",
    "3",
    "--lease-renew-deadline-seconds",
    "2",
    "--lease-retry-period-seconds",
    "0.5",
];

fn args(identity: &str) -> Vec<&str> {
    let mut args = vec!["--identity", identity];
    args.extend(LEASE);
    args
}

/// A service whose test event runs three tasks of a second each.
fn slow_config(dir: &Path) {
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - name: slow\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n".to_string()
            + &"      - {image: job-executor.test/sleep, args: [\"1\"]}\n".repeat(3),
    )
    .unwrap();
}

/// Waits until `/readyz` names `leader` as the leader.
async fn wait_leader(op: &Operator, leader: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = op.get_admin("/readyz").await;
        if status == 200 && body == format!("ready; leader: {leader}") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{leader} never led: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn leader_gauge(op: &Operator) -> String {
    let (_, metrics) = op.get_admin("/metrics").await;
    metrics
        .lines()
        .find(|line| line.starts_with("job_executor_leader "))
        .unwrap_or_default()
        .to_string()
}

fn signal(op: &Operator, signal: &str) {
    let pid = op.pid().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Fencing: the leader is paused (SIGSTOP) with runs in flight, past its lease; the standby
/// takes over and finishes every run; the old leader, resumed, sends no request that changes
/// anything but the Lease (which it finds taken), and no event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_off_once_a_standby_took_over() {
    let dir = support::fresh_dir("replicas-fence");
    slow_config(&dir);
    let a = Harness::start_full(kube_sim::Sim::builder(), dir.clone(), &args("replica-a")).await;
    wait_leader(&a, "this replica (replica-a)").await;

    // Replica B acts as its own user, so the request log tells the two apart (A is the
    // credential-less admin of the simulator).
    let everything: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "everything"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(a.sim.client())
        .create(&PostParams::default(), &everything)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "replica-b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "everything"},
        "subjects": [{"kind": "User", "name": "replica-b", "apiGroup": "rbac.authorization.k8s.io"}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(a.sim.client())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let b_dir = support::fresh_dir("replicas-fence-b");
    let b_kubeconfig = a
        .sim
        .write_kubeconfig_as(b_dir.join("kubeconfig"), "replica-b")
        .unwrap();
    let mut b = Operator::new(
        b_dir,
        b_kubeconfig,
        "default",
        vec!["--config-dir".into(), dir.to_str().unwrap().into()],
        &args("replica-b"),
    )
    .await;
    b.start_operator().await;
    wait_leader(&b, "replica-a").await;
    assert_eq!(leader_gauge(&b).await, "job_executor_leader 0");

    // Runs in flight on A, then A stops (a paused VM, a long GC, a partition).
    let mut ids: Vec<String> = (0..4).map(|i| format!("fence-{i}")).collect();
    for id in &ids {
        let response = a
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
    }
    support::wait_for("A's first Jobs", Duration::from_secs(10), || {
        a.jobs_created().len() >= 2
    })
    .await;
    signal(&a, "-STOP");
    let paused_at = a.sim.requests().last().map_or(0, |r| r.seq);

    // B takes over after the lease duration, and receives events of its own.
    wait_leader(&b, "this replica (replica-b)").await;
    let takeover = a
        .sim
        .requests()
        .into_iter()
        .find(|r| {
            r.seq > paused_at && r.user == "replica-b" && r.resource == "leases" && r.status == 200
        })
        .expect("B's write of the Lease")
        .seq;
    let a_events_at_takeover = a.sink.events().len();
    for i in 4..6 {
        let id = format!("fence-{i}");
        let response = b
            .post_event(&sample_with_id("test.triggered.json", &id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&a, "-CONT");

    // Every run finishes, each task's Job created once.
    let finished = |id: &str| {
        a.sink
            .for_trigger(id)
            .into_iter()
            .chain(b.sink.for_trigger(id))
            .filter(|e| e.event_type.ends_with(".finished"))
            .collect::<Vec<_>>()
    };
    support::wait_for("every .finished", Duration::from_secs(60), || {
        ids.iter().all(|id| !finished(id).is_empty())
    })
    .await;
    for id in &ids {
        for event in finished(id) {
            assert_eq!(event.data["status"], "succeeded", "{id}: {}", event.data);
        }
    }
    let jobs = a.jobs_created();
    let unique: BTreeSet<&String> = jobs.iter().collect();
    assert_eq!(jobs.len(), ids.len() * 3, "{jobs:?}");
    assert_eq!(unique.len(), jobs.len(), "a Job created twice: {jobs:?}");

    // The old leader follows, and made no change after the takeover but its attempt on the
    // Lease, and sent no event.
    wait_leader(&a, "replica-b").await;
    assert_eq!(leader_gauge(&a).await, "job_executor_leader 0");
    assert_eq!(leader_gauge(&b).await, "job_executor_leader 1");
    let writes = ["create", "update", "patch", "delete"];
    let stale: Vec<_> = a
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.seq > takeover && r.user.is_empty() && writes.contains(&r.verb.as_str()))
        .filter(|r| r.resource != "leases")
        .collect();
    assert!(
        stale.is_empty(),
        "the paused leader wrote after the takeover: {stale:#?}"
    );
    let lease_attempts: Vec<u16> = a
        .sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.seq > takeover && r.user.is_empty() && r.resource == "leases" && r.verb == "update"
        })
        .map(|r| r.status)
        .collect();
    assert!(
        lease_attempts.iter().all(|status| *status == 409),
        "the old leader's Lease writes after the takeover: {lease_attempts:?}"
    );
    assert_eq!(
        a.sink.events().len(),
        a_events_at_takeover,
        "the paused leader sent events after the takeover"
    );
    assert!(a.operator_running());
}

/// Hand-over: the leader stopped with SIGTERM releases the Lease once its last step is done, so
/// the standby leads at its next look (a retry period, 2 s), not after the lease duration
/// (15 s), and runs the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_at_once() {
    let a = Harness::start(&["--identity", "replica-a"]).await;
    wait_leader(&a, "this replica (replica-a)").await;
    let b_dir = support::fresh_dir("replicas-handover-b");
    let mut b = Operator::new(
        b_dir,
        a.kubeconfig.clone(),
        "default",
        vec![
            "--config-dir".into(),
            support::root().join("examples").to_str().unwrap().into(),
        ],
        &["--identity", "replica-b"],
    )
    .await;
    b.start_operator().await;
    wait_leader(&b, "replica-a").await;
    let stopped = Instant::now();
    assert!(
        a.terminate_operator(Duration::from_secs(15))
            .await
            .success()
    );
    let deadline = stopped + Duration::from_secs(5);
    loop {
        let (_, body) = b.get_admin("/readyz").await;
        if body == "ready; leader: this replica (replica-b)" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no hand-over within 5 s of SIGTERM: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = b
        .post_event(&sample_with_id("test.triggered.json", "after-handover"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let finished = b
        .wait_finished("after-handover", Duration::from_secs(30))
        .await;
    assert_eq!(finished.data["status"], "succeeded");
}

/// Sends `event` to the first replica that answers, as a Service would route around a dead
/// pod; the status of the answer.
async fn send_to_either(first: &Operator, second: &Operator, event: &serde_json::Value) -> u16 {
    for op in [first, second] {
        if op.pid().is_none() {
            continue;
        }
        if let Some(response) = op.post_event_in_background(event).await.unwrap() {
            return response.status.as_u16();
        }
    }
    panic!("no replica answered");
}

/// Two replicas taking events in turn while each is SIGKILLed once and restarted (the leader
/// first, then the other): every accepted event has exactly one run and one `.finished` (a
/// repeated delivery carries the same id), and each task's Job is created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_killed_in_turn_lose_and_repeat_nothing() {
    let dir = support::fresh_dir("replicas-kills");
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - name: quick\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks: [{image: alpine}, {image: alpine}]\n",
    )
    .unwrap();
    let mut a =
        Harness::start_full(kube_sim::Sim::builder(), dir.clone(), &args("replica-a")).await;
    wait_leader(&a, "this replica (replica-a)").await;
    let b_dir = support::fresh_dir("replicas-kills-b");
    let mut b = Operator::new(
        b_dir,
        a.kubeconfig.clone(),
        "default",
        vec!["--config-dir".into(), dir.to_str().unwrap().into()],
        &args("replica-b"),
    )
    .await;
    b.start_operator().await;
    let total = 60;
    let mut accepted = Vec::new();
    for i in 0..total {
        match i {
            20 => a.op.kill_operator(),
            25 => a.op.start_operator().await,
            40 => b.kill_operator(),
            45 => b.start_operator().await,
            _ => {}
        }
        let id = format!("kills-{i}");
        let event = sample_with_id("test.triggered.json", &id);
        let status = if i % 2 == 0 {
            send_to_either(&a, &b, &event).await
        } else {
            send_to_either(&b, &a, &event).await
        };
        if status == 202 {
            accepted.push(id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A replica that is down is routed around, so every event is accepted.
    assert_eq!(accepted.len(), total, "{accepted:?}");
    let finished_ids = |id: &str| -> BTreeSet<String> {
        a.sink
            .for_trigger(id)
            .into_iter()
            .chain(b.sink.for_trigger(id))
            .filter(|e| e.event_type.ends_with(".finished"))
            .map(|e| e.id)
            .collect()
    };
    support::wait_for("every .finished", Duration::from_secs(90), || {
        accepted.iter().all(|id| !finished_ids(id).is_empty())
    })
    .await;
    for id in &accepted {
        assert_eq!(
            finished_ids(id).len(),
            1,
            "{id}: one .finished (repeats carry its id)"
        );
    }
    let runs = a.jobruns();
    for id in &accepted {
        let of_event = runs
            .iter()
            .filter(|r| r["spec"]["event"]["id"] == id.as_str())
            .count();
        assert_eq!(of_event, 1, "{id}: one run");
    }
    let jobs = a.jobs_created();
    let unique: BTreeSet<&String> = jobs.iter().collect();
    assert_eq!(unique.len(), jobs.len(), "a Job created twice: {jobs:?}");
    assert_eq!(jobs.len(), runs.len() * 2, "each task's Job once");
}
