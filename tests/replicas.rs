//! Production operations: several replicas (every one receives events, the one holding the
//! Lease reconciles, a leader that lost the Lease makes no side effect) and the retention of
//! finished runs. Each scenario runs the real binaries against kube-sim and against the real
//! control plane (`scripts/cluster`, under the installed ServiceAccount's token and Role).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::cluster::ClusterHarness;
use support::{Harness, Operator, Received, Recorded, Replicas, Reply, sample_with_id};

use support::SHORT_LEASE as LEASE;

/// The value of `flag` in [`LEASE`], in seconds.
fn lease_flag(flag: &str) -> Duration {
    let at = LEASE.iter().position(|f| *f == flag).unwrap();
    Duration::from_secs_f64(LEASE[at + 1].parse().unwrap())
}

/// How long apart a standby looks at the Lease: a retry period, jittered up to 1.2 times.
fn look_interval() -> Duration {
    lease_flag("--lease-retry-period-seconds").mul_f64(1.2)
}

/// The longest a standby may take to lead after the leader died: it sees the leader's last
/// renewal at its next look (up to a look after it), takes over at its first look once that
/// record stood still for the lease duration (up to a look after that), and 1.5 s for a busy
/// machine.
fn takeover_bound() -> Duration {
    lease_flag("--lease-duration-seconds") + 2 * look_interval() + Duration::from_millis(1_500)
}

/// The longest a hand-over (the Lease released) may take: below the soonest a takeover once the
/// lease expired could come, the lease duration after the stopping leader's last renewal, which
/// is at most a retry period before the SIGTERM.
fn handover_bound() -> Duration {
    lease_flag("--lease-duration-seconds")
        - lease_flag("--lease-retry-period-seconds")
        - Duration::from_millis(100)
}

/// A task of a second, and a task that ends at once.
const SLEEP: &str = r#"{image: job-executor.test/sleep, args: ["1"]}"#;
const QUICK: &str = "{image: alpine}";

/// A config directory whose service `carts` runs `tasks` on the test event.
fn config(name: &str, tasks: &[&str]) -> PathBuf {
    let dir = support::fresh_dir(&format!("replicas-config-{name}"));
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    let tasks: String = tasks.iter().map(|t| format!("      - {t}\n")).collect();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        format!(
            "apiVersion: v2\nactions:\n  - name: replicas\n    events: [{{name: sh.keptn.event.test.triggered}}]\n    tasks:\n{tasks}"
        ),
    )
    .unwrap();
    dir
}

async fn on_kube_sim(config: &Path) -> Harness {
    Harness::for_replicas(config, &LEASE).await
}

async fn on_the_cluster(name: &str, config: &Path) -> ClusterHarness {
    ClusterHarness::install(name, config, &LEASE).await
}

/// The replica that leads, once one says so (a killed one is skipped).
async fn leader(replicas: &[Operator]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, replica) in replicas.iter().enumerate() {
            if replica.pid().is_some() && replica.leads().await == Some(true) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no replica leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `replica` says it leads (`true`) or follows another (`false`).
async fn wait_leads(replica: &Operator, leads: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.leads().await != Some(leads) {
        assert!(
            Instant::now() < deadline,
            "{:?} never {}: {}",
            replica.args,
            if leads { "led" } else { "followed" },
            replica.get_admin("/readyz").await.1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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

/// What every replica's sink received for the event `id`.
fn received(replicas: &[Operator], id: &str) -> Vec<Received> {
    replicas
        .iter()
        .flat_map(|r| r.sink.for_trigger(id))
        .collect()
}

fn finished(replicas: &[Operator], id: &str) -> Vec<Received> {
    received(replicas, id)
        .into_iter()
        .filter(|e| e.event_type.ends_with(".finished"))
        .collect()
}

/// Sends `event` to the replicas from `first` on, as a Service routes around a dead pod: the
/// first answer's status.
async fn send(replicas: &[Operator], first: usize, event: &Value) -> u16 {
    for k in 0..replicas.len() {
        let replica = &replicas[(first + k) % replicas.len()];
        if replica.pid().is_none() {
            continue;
        }
        if let Some(response) = replica.post_event_in_background(event).await.unwrap() {
            return response.status.as_u16();
        }
    }
    panic!("no replica answered");
}

/// Every accepted event has exactly one run and one `.finished` (a repeat carries its id) that
/// says succeeded, and each of its `tasks` had its Job created once.
async fn assert_each_ran_once(
    server: &impl Replicas,
    replicas: &[Operator],
    accepted: &[String],
    tasks: usize,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while !accepted.iter().all(|id| !finished(replicas, id).is_empty()) {
        let missing: Vec<&String> = accepted
            .iter()
            .filter(|id| finished(replicas, id).is_empty())
            .collect();
        assert!(
            Instant::now() < deadline,
            "on {}: no .finished within {timeout:?} for {missing:?}",
            server.name()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in accepted {
        let finished = finished(replicas, id);
        let ids: BTreeSet<&String> = finished.iter().map(|e| &e.id).collect();
        assert_eq!(ids.len(), 1, "{id}: one .finished (repeats carry its id)");
        assert_eq!(finished[0].data["status"], "succeeded", "{id}");
    }
    let runs = server.jobruns();
    for id in accepted {
        let of_event = runs
            .iter()
            .filter(|r| r["spec"]["event"]["id"] == id.as_str())
            .count();
        assert_eq!(of_event, 1, "{id}: one run");
    }
    assert_eq!(runs.len(), accepted.len(), "a run of no accepted event");
    let jobs = server.jobs_created();
    let unique: BTreeSet<&String> = jobs.iter().collect();
    assert_eq!(unique.len(), jobs.len(), "a Job created twice");
    // A create the API server carries out after the leader that sent it was stopped is
    // recorded as 504 (the request's context canceled; the server finishes the create in the
    // background) instead of 201; the next leader adopts that Job, from its watch (no request)
    // or by a create answered 409. So the Jobs that exist are the names of every create
    // answered 201, 409 or 504.
    let recorded = server.recorded();
    let existing: BTreeSet<String> = recorded
        .iter()
        .filter(|r| r.verb == "create" && r.resource == "jobs")
        .filter(|r| matches!(r.status, 201 | 409 | 504))
        .map(|r| r.name.clone())
        .collect();
    // Each task ran the Job of one of those creates, and no other Job was made.
    let mut task_jobs = BTreeSet::new();
    for run in &runs {
        for task in run["status"]["tasks"].as_array().into_iter().flatten() {
            let job = task["jobName"].as_str().unwrap_or_default();
            let asked: Vec<(&str, &str, u16)> = recorded
                .iter()
                .filter(|r| r.resource == "jobs" && r.name == job)
                .map(|r| (r.user.as_str(), r.verb.as_str(), r.status))
                .collect();
            assert!(
                existing.contains(job),
                "{}: a task whose Job {job:?} no create made: {asked:?}",
                run["metadata"]["name"]
            );
            task_jobs.insert(job.to_string());
        }
    }
    assert_eq!(task_jobs.len(), runs.len() * tasks, "each task's Job once");
    assert_eq!(existing, task_jobs, "Jobs of no task");
}

/// Fencing: the leader is paused (SIGSTOP) with runs in flight, past its lease; the standby
/// (a user of its own, so the server's record tells them apart) takes over and finishes every
/// run; the old leader, resumed, sends no request that changes anything but the Lease (which
/// it finds taken), and no event.
async fn a_paused_leader_is_fenced(server: impl Replicas, finish: Duration) {
    let mut a = server.replica("replica-a", server.kubeconfig.clone()).await;
    a.start_operator().await;
    wait_leads(&a, true).await;
    let mut b = server
        .replica("replica-b", server.credentials("replica-b").await)
        .await;
    b.start_operator().await;
    wait_leads(&b, false).await;
    assert_eq!(leader_gauge(&b).await, "job_executor_leader 0");

    // Runs in flight on A, then A stops (a paused VM, a long GC, a partition).
    let mut ids: Vec<String> = (0..4).map(|i| format!("fence-{i}")).collect();
    for id in &ids {
        let response = a
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
    }
    let deadline = Instant::now() + finish;
    while server.jobs_created().len() < 2 {
        assert!(Instant::now() < deadline, "A created no Jobs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&a, "-STOP");

    // B takes over after the lease duration, and receives events of its own.
    wait_leads(&b, true).await;
    // What A made before this, it made before the takeover (A resumes a second later).
    let took_over_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
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
    let replicas = [a, b];
    assert_each_ran_once(&server, &replicas, &ids, 3, finish).await;
    let [a, b] = &replicas;

    // The old leader follows, and made no change after the takeover but its attempt on the
    // Lease, and sent no event.
    wait_leads(a, false).await;
    assert_eq!(leader_gauge(a).await, "job_executor_leader 0");
    assert_eq!(leader_gauge(b).await, "job_executor_leader 1");
    let recorded = server.recorded();
    let takeover = recorded
        .iter()
        .find(|r| {
            r.user == "replica-b"
                && r.resource == "leases"
                && ["create", "update"].contains(&r.verb.as_str())
                && r.status < 300
        })
        .expect("B's write of the Lease")
        .order;
    let writes = ["create", "update", "patch", "delete"];
    let after: Vec<_> = recorded
        .iter()
        .filter(|r| r.order > takeover && r.user != "replica-b")
        .filter(|r| writes.contains(&r.verb.as_str()))
        .collect();
    // A create the old leader had handed to its connection just before the pause may land
    // after the takeover (fencing cannot call back a request already sent): the API server
    // refuses a Job's, the name being taken. A Kubernetes Event's lands (its name is new), or
    // is cut off by the fencing (504), so it passes if it was made before the takeover: its
    // name ends with the time it was made. Nothing else may land.
    let made_before_the_takeover = |r: &&Recorded| {
        r.resource == "events"
            && r.verb == "create"
            && (r.name.rsplit_once('.'))
                .and_then(|(_, made)| u128::from_str_radix(made, 16).ok())
                .is_some_and(|made| made < took_over_at)
    };
    let after: Vec<_> = after
        .into_iter()
        .filter(|r| !made_before_the_takeover(r))
        .collect();
    // A run's status write on its way at the pause may land too, at most one a run: it is made
    // on the resourceVersion it was decided on, so it lands only where the new leader has not
    // written the run since (refused otherwise, 409: `a_status_write_decided_on_an_older_record…`
    // in tests/operator.rs), as if made before the takeover.
    let written_by_b_before = |late: &Recorded| {
        recorded.iter().any(|r| {
            r.user == "replica-b"
                && r.resource == "jobruns"
                && r.name == late.name
                && writes.contains(&r.verb.as_str())
                && r.order > takeover
                && r.order < late.order
        })
    };
    let mut in_flight = std::collections::BTreeMap::new();
    let after: Vec<_> = after
        .into_iter()
        .filter(|r| {
            let late_status = r.resource == "jobruns" && r.verb == "patch";
            let count = in_flight.entry(r.name.clone()).or_insert(0);
            *count += usize::from(late_status);
            let on_its_record = r.status == 409 || !written_by_b_before(r);
            !(late_status && *count == 1 && on_its_record)
        })
        .collect();
    let stale: Vec<_> = after
        .iter()
        .filter(|r| r.resource != "leases" && !(r.verb == "create" && r.status == 409))
        .collect();
    assert!(
        stale.is_empty(),
        "on {}: the paused leader wrote after the takeover: {stale:#?}",
        server.name()
    );
    assert!(
        after.iter().all(|r| r.status == 409),
        "on {}: the old leader's Lease writes after the takeover: {after:#?}",
        server.name()
    );
    // The same limit for events: a delivery the old leader had handed to its connection just
    // before the pause is written when it resumes, before the fencing drops it (the
    // connection's task may run first). It is a delivery the new leader makes too, with the
    // same id (the old leader's record of it was fenced off): nothing only the old leader
    // decided, at most one a run.
    let late = &a.sink.events()[a_events_at_takeover..];
    let sent_by_b: Vec<String> = b.sink.events().into_iter().map(|e| e.id).collect();
    assert!(
        late.len() <= 4 && late.iter().all(|event| sent_by_b.contains(&event.id)),
        "on {}: the paused leader sent events after the takeover: {late:#?}",
        server.name()
    );
    assert!(a.operator_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_off_once_a_standby_took_over() {
    let server = on_kube_sim(&config("fence", &[SLEEP; 3])).await;
    a_paused_leader_is_fenced(server, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_off_on_the_real_control_plane() {
    let server = on_the_cluster("fence", &config("fence-cluster", &[SLEEP; 3])).await;
    a_paused_leader_is_fenced(server, Duration::from_secs(120)).await;
}

/// Hand-over: the leader stopped with SIGTERM releases the Lease once its last step is done, so
/// the standby leads at its next look (a retry period), not after the lease duration, and runs
/// the next event.
async fn a_leader_stopped_with_sigterm_hands_over(server: impl Replicas, finish: Duration) {
    let replicas = server.start_replicas(&["replica-a", "replica-b"]).await;
    let leading = leader(&replicas).await;
    let (old, new) = (&replicas[leading], &replicas[1 - leading]);
    wait_leads(new, false).await;
    let stopped = Instant::now();
    assert!(
        old.terminate_operator(Duration::from_secs(15))
            .await
            .success()
    );
    wait_leads(new, true).await;
    let handover = stopped.elapsed();
    assert!(
        handover < handover_bound(),
        "hand-over took {handover:?}, more than {:?}: the lease is 3 s",
        handover_bound()
    );
    let response = new
        .post_event(&sample_with_id("test.triggered.json", "after-handover"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let finished = new.wait_finished("after-handover", finish).await;
    assert_eq!(finished.data["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_at_once() {
    let server = on_kube_sim(&config("handover", &[QUICK])).await;
    a_leader_stopped_with_sigterm_hands_over(server, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_on_the_real_control_plane() {
    let server = on_the_cluster("handover", &config("handover-cluster", &[QUICK])).await;
    a_leader_stopped_with_sigterm_hands_over(server, Duration::from_secs(60)).await;
}

/// A replica told to stop takes no Lease while it still answers events (its shutdown delay):
/// with the leader killed meanwhile, the Lease waits for a replica that stays, rather than pass
/// to one whose controller is stopping.
async fn a_replica_that_stops_takes_no_lease(server: impl Replicas) {
    let replicas = server.start_replicas(&["replica-a", "replica-b"]).await;
    let leading = leader(&replicas).await;
    let (old, stopping) = (&replicas[leading], &replicas[1 - leading]);
    wait_leads(stopping, false).await;
    let old_identity = if leading == 0 {
        "replica-a"
    } else {
        "replica-b"
    };
    signal(stopping, "-TERM");
    // Once the standby has seen the signal: its readiness turns (its delay is 8 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while stopping.get_admin("/readyz").await.0 == 200 {
        assert!(Instant::now() < deadline, "the signal was not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(old, "-KILL");
    tokio::time::sleep(takeover_bound()).await;
    let (status, readyz) = stopping.get_admin("/readyz").await;
    assert_eq!(status, 503, "still in its shutdown delay: {readyz}");
    let leases = server.objects("coordination.k8s.io", "leases");
    let holders: Vec<&Value> = leases
        .iter()
        .map(|lease| &lease["spec"]["holderIdentity"])
        .collect();
    assert_eq!(
        holders,
        [&Value::from(old_identity)],
        "past the longest takeover, the replica that stops has not taken the Lease"
    );
}

/// The short lease, and 8 s of answering events after a signal (past the longest takeover).
fn with_shutdown_delay() -> Vec<&'static str> {
    LEASE
        .iter()
        .copied()
        .chain(["--shutdown-delay-seconds", "8"])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_takes_no_lease_on_kube_sim() {
    let args = with_shutdown_delay();
    let server = Harness::for_replicas(&config("stopping", &[QUICK]), &args).await;
    a_replica_that_stops_takes_no_lease(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_takes_no_lease_on_the_real_control_plane() {
    let args = with_shutdown_delay();
    let config = config("stopping-cluster", &[QUICK]);
    let server = ClusterHarness::install("stopping", &config, &args).await;
    a_replica_that_stops_takes_no_lease(server).await;
}

/// `count` replicas take `events` events in turn (a dead one routed around) while each is
/// SIGKILLed once and restarted ten events later, the leader first.
async fn replicas_killed_in_turn(
    server: impl Replicas,
    count: usize,
    events: usize,
    tasks: usize,
    finish: Duration,
) {
    let identities: Vec<String> = (0..count).map(|i| format!("replica-{i}")).collect();
    let identities: Vec<&str> = identities.iter().map(String::as_str).collect();
    let mut replicas = server.start_replicas(&identities).await;
    // The k-th kill at event `kill_at(k)`, the leader's first.
    let first = leader(&replicas).await;
    let kill_at = |k: usize| events * (k + 1) / (count + 2);
    let mut accepted = Vec::new();
    for i in 0..events {
        for k in 0..count {
            let replica = &mut replicas[(first + k) % count];
            if i == kill_at(k) {
                replica.kill_operator();
            }
            if i == kill_at(k) + 10 {
                replica.start_operator().await;
            }
        }
        let id = format!("turn-{count}-{i}");
        let status = send(
            &replicas,
            i % count,
            &sample_with_id("test.triggered.json", &id),
        )
        .await;
        if status == 202 {
            accepted.push(id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A replica that is down is routed around, so every event is accepted.
    assert_eq!(accepted.len(), events);
    assert_each_ran_once(&server, &replicas, &accepted, tasks, finish).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_killed_in_turn_lose_and_repeat_nothing() {
    let server = on_kube_sim(&config("turn-2", &[QUICK, QUICK])).await;
    replicas_killed_in_turn(server, 2, 200, 2, Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_killed_in_turn_lose_and_repeat_nothing() {
    let server = on_kube_sim(&config("turn-3", &[QUICK, QUICK])).await;
    replicas_killed_in_turn(server, 3, 200, 2, Duration::from_secs(90)).await;
}

/// On the real control plane one task per run: its Job controller finishes about 4 Jobs/s
/// (kube-controller-manager's default client limit, docs/BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_killed_in_turn_on_the_real_control_plane() {
    let server = on_the_cluster("turn-2", &config("turn-2-cluster", &[QUICK])).await;
    replicas_killed_in_turn(server, 2, 200, 1, Duration::from_secs(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_killed_in_turn_on_the_real_control_plane() {
    let server = on_the_cluster("turn-3", &config("turn-3-cluster", &[QUICK])).await;
    replicas_killed_in_turn(server, 3, 200, 1, Duration::from_secs(300)).await;
}

/// The leader is SIGKILLed mid-run `rounds` times in a row (at a different point of its run
/// each time: before its first Job, while a task runs, between tasks), and restarted: the
/// standby leads within [`takeover_bound`] each time, and every run ends once with each Job
/// created once. Returns the takeover times.
async fn leader_killed_again_and_again(
    server: impl Replicas,
    rounds: usize,
    finish: Duration,
) -> Vec<Duration> {
    let mut replicas = server.start_replicas(&["replica-a", "replica-b"]).await;
    let mut takeovers = Vec::new();
    let mut accepted = Vec::new();
    for round in 0..rounds {
        let leading = leader(&replicas).await;
        let standby = 1 - leading;
        wait_leads(&replicas[standby], false).await;
        let id = format!("again-{round}");
        let response = replicas[standby]
            .post_event(&sample_with_id("test.triggered.json", &id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
        accepted.push(id.clone());
        // The leader has sent `.started`: it creates the first Job next.
        let deadline = Instant::now() + finish;
        while replicas[leading].sink.for_trigger(&id).is_empty() {
            assert!(Instant::now() < deadline, "{id}: no .started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300 * (round as u64 % 5))).await;
        replicas[leading].kill_operator();
        let killed = Instant::now();
        wait_leads(&replicas[standby], true).await;
        takeovers.push(killed.elapsed());
        replicas[leading].start_operator().await;
    }
    let mut sorted = takeovers.clone();
    sorted.sort();
    println!(
        "on {}: {rounds} takeovers after a SIGKILL of the leader (lease 3 s, retry 0.5 s): \
         min {:?}, median {:?}, max {:?}; all: {takeovers:?}",
        server.name(),
        sorted[0],
        sorted[rounds / 2],
        sorted[rounds - 1]
    );
    assert!(
        sorted[rounds - 1] < takeover_bound(),
        "a takeover took longer than {:?}: {takeovers:?}",
        takeover_bound()
    );
    assert_each_ran_once(&server, &replicas, &accepted, 2, finish).await;
    takeovers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_twenty_times_in_a_row_loses_and_repeats_nothing() {
    let server = on_kube_sim(&config("again", &[SLEEP, SLEEP])).await;
    leader_killed_again_and_again(server, 20, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_twenty_times_on_the_real_control_plane() {
    let server = on_the_cluster("again", &config("again-cluster", &[SLEEP, SLEEP])).await;
    leader_killed_again_and_again(server, 20, Duration::from_secs(120)).await;
}

/// Sends `event` until a replica accepts it, at the addresses `addresses` holds at each try
/// (a Service's endpoints): the number of tries, or `None` when none accepted it in 30 s.
async fn send_until_accepted(
    client: Client<HttpConnector, Full<Bytes>>,
    addresses: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    first: usize,
    event: Value,
) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        if Instant::now() > deadline {
            return None;
        }
        let address = {
            let addresses = addresses.lock().unwrap();
            addresses[(first + attempt) % addresses.len()]
        };
        if let Some(address) = address {
            let request = http::Request::post(format!("http://{address}/events"))
                .header("content-type", "application/cloudevents+json")
                .body(Full::new(Bytes::from(event.to_string())))
                .unwrap();
            if let Ok(response) = client.request(request).await {
                if response.status() == 202 {
                    return Some(attempt + 1);
                }
                // 503 while shutting down, 429 when full: retry, as a sender should.
                assert!(
                    [429, 503].contains(&response.status().as_u16()),
                    "{}",
                    response.status()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A rolling restart under steady load: two replicas get `rate` events/s (each event to one of
/// them, retried at the other when refused) while each in turn is stopped with SIGTERM and
/// replaced by a new one (a new identity, as a new pod has a new name). Every event is
/// accepted, and runs once.
async fn rolling_restart_under_load(
    server: impl Replicas,
    rate: u32,
    tasks: usize,
    finish: Duration,
) {
    let mut replicas = server.start_replicas(&["roll-a-1", "roll-b-1"]).await;
    let addresses = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.ingest).collect::<Vec<_>>(),
    ));
    let total = rate as usize * 5;
    let sender = {
        let addresses = addresses.clone();
        tokio::spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
            let mut sends = Vec::new();
            for i in 0..total {
                ticker.tick().await;
                let event = sample_with_id("test.triggered.json", &format!("roll-{i}"));
                sends.push(tokio::spawn(send_until_accepted(
                    client.clone(),
                    addresses.clone(),
                    i % 2,
                    event,
                )));
            }
            let mut tries = Vec::new();
            for send in sends {
                tries.push(send.await.unwrap());
            }
            tries
        })
    };
    for (r, identity) in ["roll-a-2", "roll-b-2"].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let replica = &mut replicas[r];
        assert!(
            replica
                .terminate_operator(Duration::from_secs(20))
                .await
                .success()
        );
        addresses.lock().unwrap()[r] = None;
        replica.set_flag("--identity", identity);
        replica.start_operator().await;
        addresses.lock().unwrap()[r] = replica.ingest;
    }
    let tries = sender.await.unwrap();
    let lost: Vec<usize> = (0..total).filter(|i| tries[*i].is_none()).collect();
    assert!(lost.is_empty(), "events never accepted: {lost:?}");
    let retried = tries.iter().filter(|t| **t > Some(1)).count();
    println!(
        "on {}: rolling restart at {rate} events/s: {total} events accepted, {retried} after a retry",
        server.name()
    );
    let accepted: Vec<String> = (0..total).map(|i| format!("roll-{i}")).collect();
    assert_each_ran_once(&server, &replicas, &accepted, tasks, finish).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_at_fifty_events_a_second_loses_nothing() {
    let server = on_kube_sim(&config("roll", &[QUICK, QUICK])).await;
    rolling_restart_under_load(server, 50, 2, Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_on_the_real_control_plane_loses_nothing() {
    let server = on_the_cluster("roll", &config("roll-cluster", &[QUICK])).await;
    rolling_restart_under_load(server, 50, 1, Duration::from_secs(300)).await;
}

/// Bounded state: a finished run is deleted after its retention (2 s), and its Jobs and files
/// ConfigMap go with it (the garbage collector); a run whose `.finished` is not delivered yet
/// stays until it is; an event redelivered after its run was deleted runs again (the
/// documented trade-off).
async fn finished_runs_are_deleted_after_retention(server: impl Replicas, long: Duration) {
    let replicas = server.start_replicas(&["retention"]).await;
    let op = &replicas[0];
    // The sink refuses the `.finished` of one event until told otherwise.
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    op.sink.set_policy(move |event| {
        if event.triggered_id == "kept-1"
            && event.event_type.ends_with(".finished")
            && !gate.load(std::sync::atomic::Ordering::SeqCst)
        {
            Reply::Unavailable
        } else {
            Reply::Accept
        }
    });
    let run_of = |id: &str| {
        server
            .jobruns()
            .into_iter()
            .find(|run| run["spec"]["event"]["id"] == id)
    };
    for id in ["gone-1", "kept-1"] {
        let response = op
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
    }
    let finished = op.wait_finished("gone-1", long).await;
    assert_eq!(finished.data["status"], "succeeded");
    let gone = run_of("gone-1").expect("the run, before its retention passed");
    let name = gone["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        gone["status"]["finishedAt"].is_string(),
        "{}",
        gone["status"]
    );
    support::wait_for("the run deleted after its retention", long, || {
        run_of("gone-1").is_none()
    })
    .await;
    support::wait_for("its Jobs and ConfigMap collected", long, || {
        let owned = |group: &str, resource: &str| {
            server
                .objects(group, resource)
                .into_iter()
                .filter(|o| o["metadata"]["labels"]["job-executor.dev/run"] == name.as_str())
                .count()
        };
        owned("batch", "jobs") == 0 && owned("", "configmaps") == 0
    })
    .await;
    // The undelivered one stays past its retention.
    support::wait_for("a refused attempt at its .finished", long, || {
        run_of("kept-1")
            .is_some_and(|run| run["status"]["finished"]["attempts"].as_u64() >= Some(1))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kept = run_of("kept-1").expect("a run whose .finished is not delivered is kept");
    assert_eq!(kept["status"]["phase"], "Succeeded");
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    op.wait_finished("kept-1", Duration::from_secs(90)).await;
    support::wait_for("the reported run deleted", Duration::from_secs(90), || {
        run_of("kept-1").is_none()
    })
    .await;
    // Redelivered after its run is gone: a new run (within the retention it is a duplicate).
    let again = op
        .post_event(&sample_with_id("test.triggered.json", "gone-1"))
        .await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    assert_eq!(again.body["events"][0]["runs"][0]["status"], "created");
    assert!(
        op.operator_log()
            .contains("deleted the finished run after its retention")
    );
}

/// A done run leaves the controller's watch: `status.done` is recorded with the write that
/// ends it, and the API server filters on it (a selectable field of the CRD) for kubectl as for
/// the operator. A done run as an older version leaves it (without `status.done`) is marked
/// with one write and nothing else. It is deleted after its retention by whichever process runs
/// then: here one started after it was done, which finds it among the retained runs it lists
/// after it is ready.
async fn done_runs_are_deleted_after_their_retention_across_a_restart(
    server: impl Replicas,
    long: Duration,
) {
    let mut replicas = server.start_replicas(&["done"]).await;
    let op = &mut replicas[0];
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "done-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    op.wait_finished("done-1", long).await;
    let run_of = || {
        server
            .jobruns()
            .into_iter()
            .find(|run| run["spec"]["event"]["id"] == "done-1")
    };
    support::wait_for("the run recorded done", long, || {
        run_of().is_some_and(|run| run["status"]["done"] == true)
    })
    .await;
    let name = run_of().unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let selected = |selector: &str| {
        server.admin_shell(
            r#"kubectl get jobruns -n "$NAMESPACE" --field-selector "$SELECTOR" -o name"#,
            &[("SELECTOR", selector)],
        )
    };
    assert!(selected("status.done=true").contains(&name), "{name}");
    assert!(!selected("status.done!=true").contains(&name), "{name}");
    // As an older version leaves a done run (no `status.done`): it is back in the controller's
    // watch, which marks it with one write and does nothing else with it.
    let revision = run_of().unwrap()["status"]["revision"].as_u64().unwrap();
    let jobs = server.jobs_created().len();
    let sent = op.sink.for_trigger("done-1").len();
    server.admin_shell(
        r#"kubectl patch jobrun "$RUN" -n "$NAMESPACE" --subresource=status --type=merge -p '{"status":{"done":null}}'"#,
        &[("RUN", &name)],
    );
    support::wait_for("the run marked done again", long, || {
        run_of().is_some_and(|run| run["status"]["done"] == true)
    })
    .await;
    let marked = run_of().unwrap();
    assert_eq!(
        marked["status"]["revision"].as_u64(),
        Some(revision + 1),
        "one write: {}",
        marked["status"]
    );
    assert_eq!(server.jobs_created().len(), jobs, "no Job again");
    assert_eq!(op.sink.for_trigger("done-1").len(), sent, "no event again");
    op.terminate_operator(Duration::from_secs(30)).await;
    assert!(run_of().is_some(), "kept while its retention lasts");
    op.start_operator().await;
    support::wait_for("the run deleted after its retention", long, || {
        run_of().is_none()
    })
    .await;
    // Logged once the API server answered, which can be after the test saw the run gone.
    support::wait_for(
        "the restarted operator's log of the deletion",
        Duration::from_secs(10),
        || {
            let log = op.operator_log();
            let restarted = log.rsplit("--- restart ---").next().unwrap_or_default();
            restarted.contains("deleted the finished run after its retention")
        },
    )
    .await;
}

const LONGER_RETENTION: [&str; 2] = ["--jobrun-retention-seconds", "20"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_runs_are_deleted_after_their_retention_across_a_restart_on_kube_sim() {
    let server = Harness::for_replicas(&config("done", &[QUICK]), &LONGER_RETENTION).await;
    done_runs_are_deleted_after_their_retention_across_a_restart(server, Duration::from_secs(60))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_runs_are_deleted_after_their_retention_across_a_restart_on_the_real_control_plane() {
    let config = config("done-cluster", &[QUICK]);
    let server = ClusterHarness::install("done", &config, &LONGER_RETENTION).await;
    done_runs_are_deleted_after_their_retention_across_a_restart(server, Duration::from_secs(120))
        .await;
}

const RETENTION: [&str; 2] = ["--jobrun-retention-seconds", "2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_are_deleted_after_their_retention_once_reported() {
    let server = Harness::for_replicas(&config("retention", &[QUICK]), &RETENTION).await;
    finished_runs_are_deleted_after_retention(server, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_are_deleted_after_retention_on_the_real_control_plane() {
    let config = config("retention-cluster", &[QUICK]);
    let server = ClusterHarness::install("retention", &config, &RETENTION).await;
    finished_runs_are_deleted_after_retention(server, Duration::from_secs(120)).await;
}
