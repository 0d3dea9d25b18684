//! The operator end to end: the real binary against kube-sim, a sink recording what it sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use kube_sim::{Behavior, ImageRule};
use serde_json::{Value, json};
use support::{Harness, sample, sample_with_id, wait_for};

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_runs_every_task_in_order_and_reports_started_then_finished() {
    let h = Harness::start(&[]).await;
    let event = sample("test.triggered.json");
    let id = event["id"].as_str().unwrap();
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert_eq!(response.body["events"][0]["runs"][0]["status"], "created");
    assert_eq!(
        response.body["events"][0]["runs"][0]["action"],
        "Run locust"
    );

    let finished = h.wait_finished(id, LONG).await;
    let types: Vec<String> = h
        .sink
        .for_trigger(id)
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    assert_eq!(
        types,
        [
            "sh.keptn.event.test.started",
            "sh.keptn.event.test.finished"
        ]
    );
    let data = &finished.data;
    assert_eq!(data["status"], "succeeded", "{data}");
    assert_eq!(data["result"], "pass");
    assert_eq!(data["project"], "sockshop");
    assert_eq!(data["stage"], "dev");
    assert_eq!(data["service"], "carts");
    let message = data["message"].as_str().unwrap();
    let first = message
        .find("Task 'Check the service answers' finished")
        .expect(message);
    let second = message
        .find("Task 'Run locust smoke tests' finished")
        .expect(message);
    assert!(first < second, "{message}");
    assert!(
        data["test"]["start"].is_string() && data["test"]["end"].is_string(),
        "{data}"
    );
    assert_eq!(
        finished.headers["ce-shkeptncontext"],
        "5f0b6c2e-3d4a-4b8f-9e1c-2a7d6f3b8c90"
    );

    // The Jobs ran in order, each once.
    let jobs = h.jobs_created();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(
        jobs[0].ends_with("-0") && jobs[1].ends_with("-1"),
        "{jobs:?}"
    );

    // What the task containers saw: the rendered env and the staged files.
    let check = h.sim.pod_runs(&jobs[0]);
    let main = check.iter().find(|r| r.run.container == "task").unwrap();
    assert_eq!(
        main.run.env_var("HOST"),
        Some("http://carts.sockshop-dev:80")
    );
    assert_eq!(main.run.env_var("KEPTN_SERVICE"), Some("carts"));
    let script = &main.files["/keptn/scripts/wait-for.sh"];
    assert_eq!(script.mode & 0o777, 0o755);
    assert!(script.text().contains("curl -fsS"));
    let init = check
        .iter()
        .find(|r| r.run.container == "stage-files")
        .unwrap();
    assert_eq!(init.exit_code, Some(0), "{:?}", init.output);

    let locust = h.sim.pod_runs(&jobs[1]);
    let main = locust.iter().find(|r| r.run.container == "task").unwrap();
    assert_eq!(main.run.env_var("API_TOKEN"), Some("secret"));
    assert_eq!(main.run.env_var("LOCUST_USER"), Some("user"));
    assert!(
        main.run
            .env_var("DEPLOYMENT")
            .unwrap()
            .starts_with("{\"deploymentNames\"")
    );
    assert!(
        main.files["/keptn/locust/basic.py"]
            .text()
            .contains("class CartsUser")
    );
    assert!(main.files.contains_key("/keptn/locust/locust.conf"));
    assert!(
        !main.files.contains_key("/keptn/scripts/wait-for.sh"),
        "each task mounts only its own files"
    );

    let runs = h.jobruns();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"]["phase"], "Succeeded");
    wait_for("the delivery to be recorded", LONG, || {
        h.jobruns()[0]["status"]["finished"]["state"] == "Delivered"
    })
    .await;
    // What the sink received, the official CloudEvents SDK reads.
    for event in h.sink.events() {
        assert_eq!(event.sdk_error, None, "{event:?}");
    }
}

/// The `.finished` of a run that stopped at its first task.
async fn finished_data(h: &Harness, id: &str) -> serde_json::Value {
    h.wait_finished(id, LONG).await.data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_stops_the_action_and_reports_its_logs_and_reason() {
    let h = Harness::start(&[]).await;
    h.sim.runtime().set(
        ImageRule::image("curlimages/curl:*"),
        Behavior::exit(7).output([
            "waiting for http://carts.sockshop-dev:80",
            "curl: (7) Failed to connect",
        ]),
    );
    let event = sample_with_id("test.triggered.json", "fail-1");
    assert_eq!(h.post_event(&event).await.status, 202);
    let data = finished_data(&h, "fail-1").await;
    assert_eq!(data["status"], "errored", "{data}");
    assert_eq!(data["result"], "fail");
    let message = data["message"].as_str().unwrap();
    assert!(
        message.starts_with("Task 'Check the service answers' failed: BackoffLimitExceeded"),
        "{message}"
    );
    assert!(message.contains("curl: (7) Failed to connect"), "{message}");
    // How the pod ended, after the Job's own reason.
    let job = h.jobs_created()[0].clone();
    assert!(
        message.starts_with(&format!(
            "Task 'Check the service answers' failed: BackoffLimitExceeded: Job has reached the \
             specified backoff limit (pod {job}-"
        )) && message.contains(": container task exited with code 7)\n"),
        "{message}"
    );
    assert!(!message.contains("Run locust smoke tests"), "{message}");
    let jobs = h.jobs_created();
    assert_eq!(
        jobs.len(),
        1,
        "the task after the failed one never gets a Job: {jobs:?}"
    );
    assert_eq!(h.jobruns()[0]["status"]["phase"], "Failed");
}

/// A task whose pod the kubelet ended (evicted for its `/keptn` usage, its container killed
/// out of memory) fails saying so: the Job's own reason only counts the tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_evicted_or_out_of_memory_says_so_in_the_failure() {
    let h = Harness::start(&[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("curlimages/curl:*"), Behavior::hold());
    let event = sample_with_id("test.triggered.json", "evicted");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the task to run", LONG, || {
        !h.sim.runtime().held().is_empty()
    })
    .await;
    let pod = h.sim.runtime().held()[0].1.clone();
    let evicted = json!({"status": {
        "phase": "Failed",
        "reason": "Evicted",
        "message": "Usage of EmptyDir volume \"keptn\" exceeds the limit \"20Mi\".",
        "conditions": [{"type": "DisruptionTarget", "status": "True",
                        "reason": "TerminationByKubelet", "message": "Pod was evicted",
                        "lastTransitionTime": jiff::Timestamp::now().to_string()}],
        "containerStatuses": [{"name": "task", "image": "curlimages/curl:8.10.1", "imageID": "",
                               "ready": false, "restartCount": 0,
                               "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}],
    }});
    kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(h.sim.client(), "default")
        .patch_status(
            &pod,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&evicted),
        )
        .await
        .unwrap();
    let finished = h.wait_finished("evicted", LONG).await;
    let message = finished.data["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "Task 'Check the service answers' failed: BackoffLimitExceeded: Job has reached the \
             specified backoff limit (pod {pod}: Evicted: Usage of EmptyDir volume \"keptn\" \
             exceeds the limit \"20Mi\"., TerminationByKubelet: Pod was evicted, container task: \
             OOMKilled (exit code 137))"
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_never_starts_fails_the_action_within_the_timeout() {
    let h = Harness::start(&[]).await;
    h.sim.runtime().set(
        ImageRule::image("locustio/locust:*"),
        Behavior::never_starts("ImagePullBackOff")
            .message("Back-off pulling image \"locustio/locust:2.31.8\""),
    );
    let event = sample_with_id("test.triggered.json", "stuck-1");
    assert_eq!(h.post_event(&event).await.status, 202);
    let data = finished_data(&h, "stuck-1").await;
    // The 2 s never-started timeout (not the default 300 s), as the API server saw it: from the
    // stuck Job's creation (its pod's comes a moment later) to its deletion, within the timeout
    // plus a tolerance for a busy machine.
    let stuck_job = format!("{}-1", h.jobruns()[0]["metadata"]["name"].as_str().unwrap());
    let received = |verb: &str| {
        h.sim
            .requests()
            .into_iter()
            .find(|r| {
                r.verb == verb && r.resource == "jobs" && r.name == stuck_job && r.status < 300
            })
            .unwrap_or_else(|| panic!("no {verb} of {stuck_job}"))
            .received
    };
    let stuck_for = received("delete") - received("create");
    assert!(
        stuck_for < Duration::from_secs(5),
        "the stuck Job was deleted {stuck_for:?} after its creation, the timeout is 2 s"
    );
    assert_eq!(data["status"], "errored");
    let message = data["message"].as_str().unwrap();
    assert!(
        message.contains("Task 'Check the service answers' finished"),
        "{message}"
    );
    assert!(
        message.contains("Task 'Run locust smoke tests' failed: pod ")
            && message.contains("never started within 2s: ImagePullBackOff"),
        "{message}"
    );
    // The stuck Job is removed rather than left pulling forever.
    wait_for("the stuck Job to be deleted", LONG, || {
        h.sim
            .get_object("batch", "jobs", "default", &stuck_job)
            .is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_runs_once_sequentially_and_concurrently() {
    let h = Harness::start(&[]).await;
    let event = sample_with_id("test.triggered.json", "dup-1");
    let first = h.post_event(&event).await;
    let second = h.post_event(&event).await;
    assert_eq!(first.body["events"][0]["runs"][0]["status"], "created");
    assert_eq!(second.status, 202);
    assert_eq!(second.body["events"][0]["runs"][0]["status"], "duplicate");

    let concurrent = sample_with_id("test.triggered.json", "dup-2");
    let (a, b) = tokio::join!(h.post_event(&concurrent), h.post_event(&concurrent));
    assert_eq!(
        (a.status, b.status),
        (http::StatusCode::ACCEPTED, http::StatusCode::ACCEPTED)
    );
    let statuses = [
        a.body["events"][0]["runs"][0]["status"]
            .as_str()
            .unwrap()
            .to_string(),
        b.body["events"][0]["runs"][0]["status"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    assert!(
        statuses.contains(&"created".to_string()) && statuses.contains(&"duplicate".to_string()),
        "{statuses:?}"
    );

    h.wait_finished("dup-1", LONG).await;
    h.wait_finished("dup-2", LONG).await;
    assert_eq!(h.jobruns().len(), 2);
    let jobs = h.jobs_created();
    assert_eq!(jobs.len(), 4, "each task's Job once per event: {jobs:?}");
    for id in ["dup-1", "dup-2"] {
        let events = h.sink.for_trigger(id);
        assert_eq!(
            events.len(),
            2,
            "one .started and one .finished for {id}: {events:?}"
        );
    }
}

/// The answer of a retried event: 202, and its run created now (not a duplicate of something
/// stored by the attempt that failed).
fn assert_created(response: &support::Response) {
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert_eq!(
        response.body["events"][0]["runs"][0]["status"], "created",
        "{:?}",
        response.body
    );
}

/// `count` Jobs were created, no name twice (from the API server's request log).
fn assert_each_job_created_once(h: &Harness, count: usize) {
    let jobs = h.jobs_created();
    let mut unique = jobs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(jobs.len(), count, "each task's Job created once: {jobs:?}");
    assert_eq!(unique.len(), count, "{jobs:?}");
}

/// Restart safety: after every kind of crash, each accepted run finishes, each Job is created
/// once, and `.finished` reaches the sink (again with the same id when it is repeated).
async fn assert_recovered(h: &Harness, id: &str) {
    let finished = h.wait_finished(id, LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    assert_each_job_created_once(h, 2);
    let events = h.sink.for_trigger(id);
    let finished_ids: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type.ends_with(".finished"))
        .map(|e| e.id.as_str())
        .collect();
    assert!(
        finished_ids.iter().all(|i| *i == finished_ids[0]),
        "{finished_ids:?}"
    );
    let started_ids: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type.ends_with(".started"))
        .map(|e| e.id.as_str())
        .collect();
    assert!(!started_ids.is_empty() && started_ids.iter().all(|i| *i == started_ids[0]));
    let first_finished = events
        .iter()
        .position(|e| e.event_type.ends_with(".finished"))
        .unwrap();
    assert!(
        events[..first_finished]
            .iter()
            .any(|e| e.event_type.ends_with(".started"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_right_after_accepting_the_event() {
    let mut h = Harness::start(&[]).await;
    let event = sample_with_id("test.triggered.json", "crash-accept");
    assert_eq!(h.post_event(&event).await.status, 202);
    h.kill_operator();
    h.start_operator().await;
    assert_recovered(&h, "crash-accept").await;
}

/// An event nested as deep as ingest takes it is held by its JobRun and read back by the lists
/// of a restart (kube's client reads a list with serde_json's limit of 127, the event four
/// levels down: one run past it stopped every list of runs); one level deeper gets 400 and
/// nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_nested_to_the_limit_runs_across_a_restart_and_a_deeper_one_is_refused() {
    use job_executor::event::MAX_EVENT_NESTING;
    let mut h = Harness::start(&[]).await;
    // The event's object, `data`, then arrays.
    let nested = |arrays: usize| (0..arrays).fold(json!(1), |inner, _| json!([inner]));
    let mut deeper = sample_with_id("test.triggered.json", "deep-2");
    deeper["data"]["deep"] = nested(MAX_EVENT_NESTING - 1);
    let response = h.post_event(&deeper).await;
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(
        response.body.to_string().contains("more than 100 deep"),
        "{}",
        response.body
    );
    assert!(h.jobruns().is_empty());
    let mut event = sample_with_id("test.triggered.json", "deep-1");
    event["data"]["deep"] = nested(MAX_EVENT_NESTING - 2);
    assert_eq!(h.post_event(&event).await.status, 202);
    h.kill_operator();
    h.start_operator().await;
    assert_recovered(&h, "deep-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_started_was_sent_but_not_recorded() {
    let mut h = Harness::start(&[]).await;
    let mut killed = false;
    h.sink.set_policy(move |event| {
        if event.event_type.ends_with(".started") && !killed {
            killed = true;
            support::Reply::KillOperator
        } else {
            support::Reply::Accept
        }
    });
    let event = sample_with_id("test.triggered.json", "crash-started");
    // The kill on `.started` can beat the 202's bytes to the socket: the run was recorded
    // (its `.started` went out), so the answer was lost, not the event.
    let posted = h.post_event_in_background(&event);
    wait_for("the operator to be killed", LONG, || !h.operator_running()).await;
    let answer = posted.await.expect("the posting task");
    h.start_operator().await;
    match answer {
        Some(answer) => assert_eq!(answer.status, 202, "{:?}", answer.body),
        None => {
            // A sender whose answer was lost sends the same event again: it is not run twice.
            let again = h.post_event(&event).await;
            assert_eq!(again.status, 202);
            assert_eq!(again.body["events"][0]["runs"][0]["status"], "duplicate");
        }
    }
    assert_recovered(&h, "crash-started").await;
    assert_eq!(
        h.sink.of_type(".started").len(),
        2,
        "re-sent with the same id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_a_task_runs() {
    let mut h = Harness::start(&[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("locustio/locust:*"), Behavior::hold());
    let event = sample_with_id("test.triggered.json", "crash-running");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the locust task to run", LONG, || {
        !h.sim.runtime().held().is_empty()
    })
    .await;
    h.kill_operator();
    h.start_operator().await;
    let released = h.sim.release(&h.sim.runtime().held()[0].1);
    assert_eq!(released, 1);
    assert_recovered(&h, "crash-running").await;
}

/// A config directory whose `carts` action `staged` has `tasks` (YAML list items) and a
/// `carts/data/b.txt` to stage.
fn staged_data(name: &str, tasks: &str) -> std::path::PathBuf {
    let dir = support::fresh_dir(name);
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::create_dir_all(dir.join("carts/data")).unwrap();
    std::fs::write(dir.join("carts/data/b.txt"), "b").unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        format!(
            "apiVersion: v2\nactions:\n  - name: staged\n    events: [{{name: sh.keptn.event.test.triggered}}]\n    tasks:\n{tasks}"
        ),
    )
    .unwrap();
    dir
}

/// A task whose files could not be staged (its init container failed) fails with the init
/// container's log, and its own container's, which never started, says why as the API server
/// says it (not the client's debug form of the answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_files_cannot_be_staged_says_why_its_container_has_no_log() {
    let dir = staged_data(
        "init-fails",
        "      - {name: first, image: alpine, files: [data]}\n",
    );
    let h = Harness::start_full(kube_sim::Sim::builder(), dir, &[]).await;
    h.sim.runtime().set(
        ImageRule::image("ghcr.io/job-executor/job-executor:*"),
        Behavior::exit(1).output(["cannot stage the files"]),
    );
    let event = sample_with_id("test.triggered.json", "init-fails");
    assert_created(&h.post_event(&event).await);
    let finished = h.wait_finished("init-fails", LONG).await;
    let message = finished.data["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/stage-files]\ncannot stage the files\n")
            && message.contains("/task]\n(logs unavailable: container \"task\" in pod \"")
            && message.contains("\" is waiting to start: PodInitializing)"),
        "{message}"
    );
    assert!(!message.contains("Status {"), "{message}");
}

/// The kubelet answers a container the runtime no longer has (garbage-collected under disk
/// pressure) with a 200 whose body is one sentence: shown as logs that cannot be read, not as
/// what the task printed. kube-sim plays it as a task that prints that line alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_s_answer_for_a_container_gone_is_shown_as_no_logs() {
    let h = Harness::start(&[]).await;
    h.sim.runtime().set(
        ImageRule::image("locustio/locust:*"),
        Behavior::exit(0).output(["unable to retrieve container logs for containerd://4f2a"]),
    );
    let event = sample_with_id("test.triggered.json", "kubelet-gone");
    assert_created(&h.post_event(&event).await);
    let finished = h.wait_finished("kubelet-gone", LONG).await;
    let message = finished.data["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "/task]\n(logs unavailable: unable to retrieve container logs for containerd://4f2a)"
        ),
        "{message}"
    );
}

/// The files made before a status write that failed are the run's: a restart adopts them, though
/// the config directory was edited meanwhile (the task's Job, made already, mounts them), rather
/// than fail a task whose Job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_made_before_a_failed_status_write_are_adopted_after_a_restart() {
    let dir = staged_data(
        "files-adopted",
        "      - {name: first, image: alpine, files: [data]}\n",
    );
    let mut h = Harness::start_full(kube_sim::Sim::builder(), dir.clone(), &[]).await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(500)
            .verb("patch")
            .resource("jobruns/status")
            .times(1000),
    );
    let event = sample_with_id("test.triggered.json", "files-adopted");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the Job, then a status write refused", LONG, || {
        let requests = h.sim.requests();
        requests
            .iter()
            .any(|r| r.resource == "jobs" && r.verb == "create" && r.status == 201)
            && requests
                .iter()
                .any(|r| r.resource == "jobruns" && r.subresource == "status" && r.status == 500)
    })
    .await;
    // A restart (which reads the directory again) after a file that sorts before the other was
    // added: read again, the files are not the run's.
    h.kill_operator();
    std::fs::write(dir.join("carts/data/a.txt"), "a").unwrap();
    h.sim.faults().clear();
    h.start_operator().await;
    let data = finished_data(&h, "files-adopted").await;
    assert_eq!(data["status"], "succeeded", "{data}");
    let jobs_created = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.resource == "jobs" && r.verb == "create" && r.status == 201)
        .count();
    assert_eq!(jobs_created, 1, "one Job, adopted after the restart");
}

/// The files a run stages are those its event was accepted with: a config directory edited
/// before the task that stages them starts fails the run saying so (the Jobs name the files
/// by the keys recorded then), instead of a pod that never finds its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_edited_under_a_run_fail_it_saying_so() {
    let dir = staged_data(
        "files-edited",
        "      - {name: first, image: \"locustio/locust:2\"}\n      - {name: second, image: alpine, files: [data]}\n",
    );
    let h = Harness::start_full(kube_sim::Sim::builder(), dir.clone(), &[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("locustio/locust:*"), Behavior::hold());
    let event = sample_with_id("test.triggered.json", "files-edited");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the first task to run", LONG, || {
        !h.sim.runtime().held().is_empty()
    })
    .await;
    // A file that sorts before the other: the other's key would move.
    std::fs::write(dir.join("carts/data/a.txt"), "a").unwrap();
    h.sim.release(&h.sim.runtime().held()[0].1);
    let data = finished_data(&h, "files-edited").await;
    assert_eq!(data["status"], "errored", "{data}");
    let message = data["message"].as_str().unwrap();
    assert!(
        message
            .contains("Task 'second' failed: the task files changed since the event was accepted"),
        "{message}"
    );
}

/// The API server fails the first Job's create a few times (a 500, as while etcd elects a
/// leader): `.started`, sent before, is recorded before the reconcile gives up, so it goes out
/// once. Keptn counts each `.started` it gets and closes the task at as many `.finished`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_goes_out_once_while_the_first_job_is_refused_for_a_while() {
    let h = Harness::start(&[]).await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(500)
            .verb("create")
            .resource("jobs")
            .times(3),
    );
    let event = sample_with_id("test.triggered.json", "started-once");
    assert_eq!(h.post_event(&event).await.status, 202);
    let data = finished_data(&h, "started-once").await;
    assert_eq!(data["status"], "succeeded", "{data}");
    let refused = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.resource == "jobs" && r.verb == "create" && r.status == 500)
        .count();
    assert_eq!(refused, 3);
    let kinds: Vec<String> = h
        .sink
        .for_trigger("started-once")
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "sh.keptn.event.test.started",
            "sh.keptn.event.test.finished"
        ],
        "{}",
        h.operator_log()
    );
    // The run staged files: once it is done, their ConfigMap goes.
    let files = || {
        h.sim
            .list_objects("", "configmaps", None)
            .iter()
            .filter(|map| {
                map["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| name.ends_with("-files"))
            })
            .count()
    };
    assert!(
        h.sim
            .requests()
            .iter()
            .any(|r| r.resource == "configmaps" && r.verb == "create" && r.status == 201)
    );
    wait_for("the files ConfigMap deleted", LONG, || files() == 0).await;
}

/// The first task's Job completes, and the API server fails the second Job's create a few
/// times while the first Job's TTL removes it: the first task's end, seen on its Job, is
/// recorded before the reconcile gives up, so the task stays succeeded (it was failed as "gone"
/// once its Job went before the record was written) and the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_s_end_is_kept_while_the_next_job_is_refused_past_the_first_job_s_ttl() {
    let h = Harness::start(&[]).await;
    // The example's first task keeps its Job ten minutes: a second here; the operator's
    // retries take real time (1, 2, 4 s).
    h.sim.set_time_scale(600.0);
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(500)
            .verb("create")
            .resource("jobs")
            .name("*-1")
            .times(3),
    );
    let event = sample_with_id("test.triggered.json", "end-kept");
    assert_eq!(h.post_event(&event).await.status, 202);
    let data = finished_data(&h, "end-kept").await;
    assert_eq!(data["status"], "succeeded", "{data}\n{}", h.operator_log());
    let first_job = format!("{}-0", h.jobruns()[0]["metadata"]["name"].as_str().unwrap());
    let removed_by_ttl = h
        .sim
        .requests()
        .iter()
        .any(|r| r.resource == "jobs" && r.verb == "create" && r.status == 500)
        && !h
            .sim
            .list_objects("", "jobs", None)
            .iter()
            .any(|job| job["metadata"]["name"] == first_job.as_str());
    assert!(
        removed_by_ttl,
        "the first Job went while the second was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_between_tasks() {
    let mut h = Harness::start(&[]).await;
    // The second Job cannot be created for now: the run is between its tasks.
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(500)
            .verb("create")
            .resource("jobs")
            .name("*-1")
            .times(1000),
    );
    let event = sample_with_id("test.triggered.json", "crash-between");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("an attempt at the second Job", LONG, || {
        h.sim
            .requests()
            .iter()
            .any(|r| r.resource == "jobs" && r.verb == "create" && r.status == 500)
    })
    .await;
    h.kill_operator();
    h.sim.faults().clear();
    h.start_operator().await;
    assert_recovered(&h, "crash-between").await;
}

/// A request the API server leaves unanswered (as one to a server that died while holding it)
/// is given up after `--kube-api-read-timeout-seconds` and tried again: the run goes on, where
/// it waited for an answer that never came. The watches, quiet meanwhile, are not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_left_unanswered_is_given_up_and_tried_again() {
    let h = Harness::start(&["--kube-api-read-timeout-seconds", "2"]).await;
    h.sim
        .faults()
        .delay_next_request("patch", "jobruns/status", "", Duration::from_secs(3600));
    let event = sample_with_id("test.triggered.json", "unanswered");
    assert_eq!(h.post_event(&event).await.status, 202);
    let data = finished_data(&h, "unanswered").await;
    assert_eq!(data["status"], "succeeded", "{data}");
    assert!(
        !h.sim.faults().request_delay_pending(),
        "a status write was held (for an hour)"
    );
}

/// A run deleted while its Jobs stay (orphaned, or not yet collected) and its event sent
/// again: the new run of the same name does not take the old Jobs for its own (their outcome
/// and logs are the old run's); its task waits, saying why, and runs once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sent_again_after_its_deletion_does_not_adopt_the_old_runs_jobs() {
    let h = Harness::start(&[]).await;
    let says = |what: &str| Behavior::exit(0).output([what]);
    let task = || ImageRule::any().container("task");
    h.sim.runtime().set(task(), says("the old run's task"));
    let event = sample_with_id("test.triggered.json", "sent-again");
    assert_eq!(h.post_event(&event).await.status, 202);
    h.wait_succeeded("sent-again", LONG).await;
    let jobs = h.jobs_created();
    let name = h.jobruns()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let orphan = kube::api::DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..Default::default()
    };
    runs_api(&h).delete(&name, &orphan).await.unwrap();
    wait_for("the run to be gone", LONG, || h.jobruns().is_empty()).await;

    assert_eq!(h.post_event(&event).await.status, 202);
    let waits = |run: &Value| {
        run["status"]["tasks"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("made for another run of the same name"))
    };
    wait_for("the new run's task to say why it waits", LONG, || {
        h.jobruns().first().is_some_and(waits)
    })
    .await;
    assert_eq!(
        h.jobs_created(),
        jobs,
        "no Job is made while the old one is there"
    );
    let finished = || {
        h.sink
            .for_trigger("sent-again")
            .iter()
            .filter(|e| e.event_type.ends_with(".finished"))
            .count()
    };
    assert_eq!(finished(), 1, "only the old run's");
    // The old Jobs go, their pods left (orphaned too): pods of the Jobs' names that are not
    // the new Jobs', whose logs are another run's.
    h.sim.runtime().set(task(), says("the new run's task"));
    let old_jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(h.sim.client(), "default");
    for job in &jobs {
        old_jobs.delete(job, &orphan).await.unwrap();
    }
    wait_for("the new run to finish", LONG, || finished() == 2).await;
    let old_pods = h.sim.list_objects("", "pods", Some("default")).len();
    assert!(old_pods >= 2 * jobs.len(), "the old pods stay: {old_pods}");
    let finished = h.sink.for_trigger("sent-again");
    let last = finished
        .iter()
        .rfind(|e| e.event_type.ends_with(".finished"));
    let logs = last.unwrap().data["message"].to_string();
    assert!(
        logs.contains("the new run's task") && !logs.contains("the old run's task"),
        "{logs}"
    );
    assert_eq!(
        h.jobs_created().len(),
        2 * jobs.len(),
        "each task ran again: {:?}",
        h.jobs_created()
    );
    assert_eq!(h.jobruns()[0]["status"]["phase"], "Succeeded");
}

/// A run being deleted but still there (kept by a finalizer, as `--cascade=foreground` keeps
/// it until its Jobs are gone) takes no step more: its task's end makes no next Job and sends
/// no `.finished`, as once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_being_deleted_takes_no_step_more() {
    let h = Harness::start(&[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("curlimages/curl:*"), Behavior::hold());
    let event = sample_with_id("test.triggered.json", "being-deleted");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the first task's pod to run", LONG, || {
        !h.sim.runtime().held().is_empty()
    })
    .await;
    let name = h.jobruns()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let keep = json!({"metadata": {"finalizers": ["example.com/keep"]}});
    let patch = kube::api::Patch::Merge(&keep);
    let params = kube::api::PatchParams::default();
    runs_api(&h).patch(&name, &params, &patch).await.unwrap();
    runs_api(&h)
        .delete(&name, &kube::api::DeleteParams::background())
        .await
        .unwrap();
    let left_alone = || {
        h.operator_log()
            .matches("the run is being deleted; left alone")
            .count()
    };
    wait_for("the run to be marked deleted", LONG, || {
        h.jobruns()[0]["metadata"]["deletionTimestamp"].is_string()
    })
    .await;
    // Its deletion's own reconcile first, so that the next one is the task's end's.
    wait_for("the operator to see the deletion", LONG, || {
        left_alone() > 0
    })
    .await;
    let seen = left_alone();
    h.sim.release(&h.sim.runtime().held()[0].1);
    // The task's end wakes the run: left alone, or (were it not) its next Job made.
    wait_for("the operator to see the task's end", LONG, || {
        left_alone() > seen || h.jobs_created().len() > 1
    })
    .await;
    assert_eq!(h.jobs_created().len(), 1, "{:?}", h.jobs_created());
    let kinds: Vec<String> = (h.sink.for_trigger("being-deleted").iter())
        .map(|e| e.event_type.clone())
        .collect();
    assert_eq!(kinds, ["sh.keptn.event.test.started"]);
    let unkeep = json!({"metadata": {"finalizers": null}});
    let patch = kube::api::Patch::Merge(&unkeep);
    runs_api(&h).patch(&name, &params, &patch).await.unwrap();
    wait_for("the run to be gone", LONG, || h.jobruns().is_empty()).await;
}

/// `--log-format json`: every line on stderr is an object a log collector parses, its level,
/// target and fields (the message among them) as keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_format_json_every_log_line_is_a_json_object() {
    let h = Harness::start(&["--log-format", "json"]).await;
    let event = sample_with_id("test.triggered.json", "json-logs");
    assert_eq!(h.post_event(&event).await.status, 202);
    h.wait_succeeded("json-logs", LONG).await;
    let log = h.operator_log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.len() > 3, "{log}");
    for line in &lines {
        assert!(
            line["level"].is_string()
                && line["target"].is_string()
                && line["timestamp"].is_string(),
            "{line}"
        );
    }
    let created = lines
        .iter()
        .find(|line| line["fields"]["message"] == "created Job")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(created["fields"]["job"].is_string(), "{created}");
}

/// The JobRuns as a client of the simulator's sees them (another writer, a user).
fn runs_api(h: &Harness) -> kube::Api<job_executor::crd::JobRun> {
    kube::Api::namespaced(h.sim.client(), "default")
}

/// At least one of the operator's status writes was refused for the run's version (409).
fn assert_a_status_write_was_refused(h: &Harness) {
    let writes: Vec<u16> = h
        .sim
        .requests()
        .iter()
        .filter(|r| {
            r.verb == "patch" && r.subresource == "status" && r.field_manager == "job-executor"
        })
        .map(|r| r.status)
        .collect();
    assert!(
        writes.contains(&409),
        "the held write is refused: {writes:?}"
    );
}

/// A status write lands only on the run it was decided on. One held on its way while another
/// writer records the run otherwise (a replica that took over while this one was paused with
/// the write in flight) is refused (409), and the run goes on from the newer record instead of
/// being overwritten with what this operator decided on the older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_write_decided_on_an_older_record_of_the_run_is_not_laid_over_a_newer_one() {
    let h = Harness::start(&[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("curlimages/curl:*"), Behavior::hold());
    let event = sample_with_id("test.triggered.json", "older-record");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the first task's Job to be recorded", LONG, || {
        !h.sim.runtime().held().is_empty()
            && h.jobruns()
                .first()
                .is_some_and(|run| run["status"]["tasks"][0]["jobName"].is_string())
    })
    .await;
    // The task's end is decided on the record as it is now; its write is held on the way.
    h.sim
        .faults()
        .delay_next_request("patch", "jobruns/status", "", Duration::from_secs(5));
    h.sim.release(&h.sim.runtime().held()[0].1);
    wait_for("the operator's write of the task's end", LONG, || {
        !h.sim.faults().request_delay_pending()
    })
    .await;
    // Meanwhile another writer ends the run otherwise.
    let run = h.jobruns()[0].clone();
    let name = run["metadata"]["name"].as_str().unwrap().to_string();
    let mut status = run["status"].clone();
    status["revision"] = json!(status["revision"].as_u64().unwrap() + 1);
    status["phase"] = json!("Failed");
    status["outcome"] =
        json!({"status": "errored", "message": "Ended by the replica that took over."});
    status["finishedAt"] = json!(jiff::Timestamp::now().to_string());
    status["finished"] = json!({"id": "-", "state": "Pending"});
    runs_api(&h)
        .patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    let finished = h.wait_finished("older-record", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    assert_eq!(
        finished.data["message"], "Ended by the replica that took over.",
        "{}",
        finished.data
    );
    assert_a_status_write_was_refused(&h);
}

/// A run whose metadata alone changes while its status write is on its way (a label, an
/// annotation) has the write made again on its new version: what was sent is recorded once,
/// not decided and sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_write_refused_for_a_metadata_edit_is_made_again() {
    let h = Harness::start(&[]).await;
    // `.finished` is answered late: the run is labelled while its delivery is under way, and
    // the write recording it is held until the label has landed.
    h.sink.set_policy(|event| {
        if event.event_type.ends_with(".finished") {
            support::Reply::AcceptAfter(Duration::from_secs(2))
        } else {
            support::Reply::Accept
        }
    });
    let event = sample_with_id("test.triggered.json", "metadata-edit");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the .finished delivery", LONG, || {
        !h.sink.of_type(".finished").is_empty()
    })
    .await;
    h.sim
        .faults()
        .delay_next_request("patch", "jobruns/status", "", Duration::from_secs(5));
    let name = h.jobruns()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    runs_api(&h)
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"example.com/seen": "yes"}}})),
        )
        .await
        .unwrap();
    wait_for("the run to be done", LONG, || {
        h.jobruns()
            .first()
            .is_some_and(|run| run["status"]["done"] == json!(true))
    })
    .await;
    assert_a_status_write_was_refused(&h);
    assert_eq!(
        h.sink.of_type(".finished").len(),
        1,
        ".finished is sent once"
    );
    let run = &h.jobruns()[0];
    assert_eq!(run["status"]["finished"]["state"], "Delivered", "{run}");
    assert_eq!(run["metadata"]["labels"]["example.com/seen"], "yes");
}

/// A cancel that lands while a queued run's start is being written (the write that lets it
/// leave the queue, before its first Job): the write, refused for the run's new version, is not
/// made again as if only a label had changed, and the run, decided again with the cancel, makes
/// no Job (it made its first Job, deleted at the next look).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_a_queued_run_starts_is_seen_before_its_first_job() {
    let h = held_task_harness_with(
        "cancel-leaving-queue",
        "    concurrency: {group: one, limit: 1, policy: queue}\n",
        &[],
    )
    .await;
    let first = h
        .post_event(&sample_with_id("test.triggered.json", "leaving-1"))
        .await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    wait_for("the first task running", LONG, || {
        h.sim.runtime().held().len() == 1
    })
    .await;
    let second = h
        .post_event(&sample_with_id("test.triggered.json", "leaving-2"))
        .await;
    assert_eq!(second.status, 202, "{:?}", second.body);
    let name = second.body["events"][0]["runs"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let queued = |run: &Value| {
        run["metadata"]["name"] == json!(name.as_str())
            && run["status"]["phase"] == "Queued"
            && run["status"]["started"]["state"] == "Delivered"
    };
    wait_for("the second run queued", LONG, || {
        h.jobruns().iter().any(queued)
    })
    .await;
    let jobs_before = jobs_made(&h);
    // The second run's next status write, the one that lets it leave the queue, is held while
    // the run is cancelled.
    h.sim
        .faults()
        .delay_next_request("patch", "jobruns/status", &name, Duration::from_secs(3));
    for (_, target, _) in h.sim.runtime().held() {
        h.sim.release(&target);
    }
    wait_for("the held write", LONG, || {
        !h.sim.faults().request_delay_pending()
    })
    .await;
    runs_api(&h)
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"job-executor.dev/cancel": "ci"}}}),
            ),
        )
        .await
        .unwrap();
    let finished = h.wait_finished("leaving-2", LONG).await;
    assert!(
        finished.data["message"]
            .as_str()
            .is_some_and(|m| m.contains("cancelled by ci")),
        "{}",
        finished.data
    );
    assert_a_status_write_was_refused(&h);
    assert_eq!(
        jobs_made(&h),
        jobs_before,
        "no Job is made for the cancelled run"
    );
}

/// How many Jobs the operator asked kube-sim to make.
fn jobs_made(h: &Harness) -> usize {
    h.sim
        .requests()
        .iter()
        .filter(|r| r.verb == "create" && r.resource == "jobs")
        .count()
}

/// A run an older version ended (done, without `status.done` recorded) is marked done with
/// its record kept: the copy the controller holds of a done run is trimmed, and only `done` is
/// written, not that copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_an_older_version_ended_is_marked_done_keeping_its_record() {
    let h = Harness::start(&[]).await;
    let event = sample_with_id("test.triggered.json", "older-version");
    assert_eq!(h.post_event(&event).await.status, 202);
    h.wait_finished("older-version", LONG).await;
    let done = |run: &Value| run["status"]["done"] == json!(true);
    wait_for("the run to be done", LONG, || h.jobruns().iter().any(done)).await;
    let before = h.jobruns()[0]["status"].clone();
    assert_eq!(
        before["tasks"].as_array().map(Vec::len),
        Some(2),
        "{before}"
    );
    // As an older version left it.
    let name = h.jobruns()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    runs_api(&h)
        .patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "status": { "done": null } })),
        )
        .await
        .unwrap();
    let revision = before["revision"].as_u64().unwrap();
    wait_for("the run to be marked done again", LONG, || {
        h.jobruns()
            .first()
            .is_some_and(|run| done(run) && run["status"]["revision"] == json!(revision + 1))
    })
    .await;
    let mut after = h.jobruns()[0]["status"].clone();
    after["revision"] = json!(revision);
    assert_eq!(after, before);
}

/// A run this version cannot read (a task key of a newer version, rolled back since; a hand's
/// edit) is left alone, said in the log; the other runs go on, across a restart's lists too
/// (one such run failed every list of runs, and stopped the controller for all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_be_read_is_left_alone_and_the_others_go_on() {
    let mut h = Harness::start(&[]).await;
    let resource = kube::api::ApiResource::erase::<job_executor::crd::JobRun>(&());
    let raw: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(h.sim.client(), "default", &resource);
    let newer: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "job-executor.dev/v1alpha1",
        "kind": "JobRun",
        "metadata": {"name": "from-a-newer-version"},
        "spec": {
            "event": sample_with_id("test.triggered.json", "newer"),
            "action": {"index": 0, "name": "newer", "tasks": [{"image": "alpine", "futureKey": 1}]},
        },
    }))
    .unwrap();
    raw.create(&kube::api::PostParams::default(), &newer)
        .await
        .unwrap();
    // Readable, but stored for a run format this version does not know.
    let newer_format: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "job-executor.dev/v1alpha1",
        "kind": "JobRun",
        "metadata": {"name": "for-a-newer-format"},
        "spec": {
            "event": sample_with_id("test.triggered.json", "newer-format"),
            "action": {"index": 0, "name": "newer-format", "tasks": [{"image": "alpine"}]},
            "requires": job_executor::crd::RUN_FORMAT + 1,
        },
    }))
    .unwrap();
    raw.create(&kube::api::PostParams::default(), &newer_format)
        .await
        .unwrap();
    h.kill_operator();
    h.start_operator().await;
    let event = sample_with_id("test.triggered.json", "beside-it");
    assert_eq!(h.post_event(&event).await.status, 202);
    assert_recovered(&h, "beside-it").await;
    wait_for("the unreadable run said in the log", LONG, || {
        h.operator_log().contains(
            "this run cannot be read, and is left alone (stored by a newer version of \
             job-executor?): spec.action.tasks[0].futureKey: unknown field `futureKey`",
        )
    })
    .await;
    let format = job_executor::crd::RUN_FORMAT;
    let needs = format!(
        "this run cannot be read, and is left alone (stored by a newer version of job-executor?): \
         spec.requires: the run needs run format {}, and this version of job-executor knows \
         formats up to {format}",
        format + 1
    );
    wait_for("the run of a newer format said in the log", LONG, || {
        h.operator_log().contains(&needs)
    })
    .await;
    assert!(h.sink.for_trigger("newer").is_empty());
    assert!(h.sink.for_trigger("newer-format").is_empty());
    assert!(
        h.jobs_created().iter().all(|job| {
            !job.starts_with("from-a-newer-version") && !job.starts_with("for-a-newer-format")
        }),
        "{:?}",
        h.jobs_created()
    );
}

/// A Job the API server forbids for now (an exceeded quota, a missing permission) is tried again:
/// meanwhile the run says why its task has not started, `.started` is sent once and the run's
/// start is kept (the wait counts from it); once allowed, the task runs. Forbidden for longer
/// than the never-started timeout, the task fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_job_waits_saying_why_then_runs_or_fails_after_the_never_started_timeout() {
    let h = Harness::start(&["--never-started-timeout-seconds", "60"]).await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(403)
            .verb("create")
            .resource("jobs")
            .times(1000),
    );
    let event = sample_with_id("test.triggered.json", "forbidden");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the run to say why its task waits", LONG, || {
        h.jobruns().first().is_some_and(|run| {
            run["status"]["tasks"][0]["message"]
                .as_str()
                .is_some_and(|m| {
                    m.starts_with(
                        "not started: the Kubernetes API refuses to create its Job (tried again \
                         until it has waited 60s): ",
                    )
                })
        })
    })
    .await;
    let forbidden = || {
        h.sim
            .requests()
            .iter()
            .filter(|r| r.resource == "jobs" && r.verb == "create" && r.status == 403)
            .count()
    };
    wait_for("the Job to be tried again", LONG, || forbidden() >= 3).await;
    let run = h.jobruns()[0].clone();
    assert_eq!(run["status"]["phase"], "Running", "{run}");
    assert_eq!(run["status"]["started"]["state"], "Delivered", "{run}");
    h.sim.faults().clear();
    let finished = h.wait_finished("forbidden", LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    assert_eq!(
        h.sink.of_type(".started").len(),
        1,
        ".started once, not at every try"
    );
    assert_eq!(
        h.jobruns()[0]["status"]["startedAt"],
        run["status"]["startedAt"],
        "the run's start is kept"
    );
    assert!(
        h.jobruns()[0]["status"]["tasks"][0]["message"].is_null(),
        "the waiting message goes once the task starts: {}",
        h.jobruns()[0]["status"]
    );

    // Forbidden for good: the task fails after the never-started timeout (2 s here).
    let h = Harness::start(&[]).await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(403)
            .verb("create")
            .resource("jobs")
            .times(1000),
    );
    let event = sample_with_id("test.triggered.json", "forbidden-for-good");
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("forbidden-for-good", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    let message = finished.data["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Task 'Check the service answers' failed: the Kubernetes API refused to create the \
             task's Job for 2s: injected fault: forbidden"
        ),
        "{message}"
    );
    assert_eq!(h.jobruns()[0]["status"]["phase"], "Failed");
}

/// A run the API server refuses to store (too large) is refused in the answer, and reported in
/// its `.finished` too: its failure is stored in its place, with the event cut to what the reply
/// needs, so that a sender over NATS (or one that does not read the answer) hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_by_the_api_server_is_reported_in_its_finished() {
    let h = Harness::start(&[]).await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(413)
            .verb("create")
            .resource("jobruns")
            .times(1),
    );
    let event = sample_with_id("test.triggered.json", "refused-reported");
    let answer = h.post_event(&event).await;
    let runs = answer.body["events"][0]["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1, "{:?}", answer.body);
    assert_eq!(runs[0]["status"], "refused", "{:?}", answer.body);
    wait_for("a .finished of every run", LONG, || {
        h.sink
            .for_trigger("refused-reported")
            .iter()
            .filter(|e| e.event_type.ends_with(".finished"))
            .count()
            == runs.len()
    })
    .await;
    let reported: Vec<_> = h
        .sink
        .for_trigger("refused-reported")
        .into_iter()
        .filter(|e| {
            e.event_type.ends_with(".finished")
                && e.data["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("the Kubernetes API refuses to store the run: ")
        })
        .collect();
    assert_eq!(reported.len(), 1, "the refused run's .finished");
    assert_eq!(reported[0].data["status"], "errored");
    assert_eq!(reported[0].data["project"], "sockshop");
    let stored = h
        .jobruns()
        .into_iter()
        .find(|run| run["metadata"]["name"] == runs[0]["name"])
        .expect("the refused run, stored failed");
    assert_eq!(stored["status"]["phase"], "Failed", "{stored}");
    // Its event cut to what the reply is built from (the cause may have been its size).
    let data = &stored["spec"]["event"]["data"];
    assert_eq!(data["project"], "sockshop", "{stored}");
    assert!(
        data.get("test").is_none() && data.get("deployment").is_none(),
        "{stored}"
    );

    // Malformed for the API server (400, as an admission webhook's denial can be): refused for
    // good too, not 503 for ever.
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(400)
            .verb("create")
            .resource("jobruns")
            .times(2),
    );
    let event = sample_with_id("test.triggered.json", "refused-malformed");
    let answer = h.post_event(&event).await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.body["events"][0]["runs"][0]["status"], "refused");
    let jobs: Vec<String> = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.resource == "jobs" && r.verb == "create")
        .map(|r| format!("{:?}", r))
        .collect();
    assert!(jobs.is_empty(), "{jobs:?}");
}

/// The failure stored for a refused run joins no concurrency group: it would cancel the run
/// of a `cancel-in-progress` group it arrived after, and then fail at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_run_cancels_no_run_of_its_group() {
    let dir = support::fresh_dir("refused-group");
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - name: deploy\n    events: [{name: sh.keptn.event.test.triggered}]\n    concurrency: {group: deploy, limit: 1, policy: cancel-in-progress}\n    tasks:\n      - {name: first, image: \"locustio/locust:2\"}\n",
    )
    .unwrap();
    let h = Harness::start_full(kube_sim::Sim::builder(), dir, &[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("locustio/locust:*"), Behavior::hold());
    let first = sample_with_id("test.triggered.json", "group-first");
    assert_eq!(h.post_event(&first).await.status, 202);
    wait_for("the first run's task to run", LONG, || {
        !h.sim.runtime().held().is_empty()
    })
    .await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(413)
            .verb("create")
            .resource("jobruns")
            .times(1),
    );
    let second = sample_with_id("test.triggered.json", "group-second");
    assert_eq!(h.post_event(&second).await.status, 422);
    let refused = h.wait_finished("group-second", LONG).await;
    assert_eq!(refused.data["status"], "errored");
    h.sim.release(&h.sim.runtime().held()[0].1);
    let finished = h.wait_finished("group-first", LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
}

/// A value of the event that a later task reads and the event does not have fails the run
/// before its first Job: the event does not change, so the first task would run for nothing;
/// and the run, which cannot run, cancels no run of its `cancel-in-progress` group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_a_value_a_task_reads_runs_nothing_and_cancels_nothing() {
    let dir = support::fresh_dir("missing-value");
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - name: deploy\n    events: [{name: sh.keptn.event.test.triggered}]\n    concurrency: {group: deploy, limit: 1, policy: cancel-in-progress}\n    tasks:\n      - {name: first, image: \"locustio/locust:2\"}\n      - name: second\n        image: alpine\n        env: [{name: HOST, valueFrom: event, value: \"$.data.deployment.deploymentURIsLocal[0]\"}]\n",
    )
    .unwrap();
    let h = Harness::start_full(kube_sim::Sim::builder(), dir, &[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("locustio/locust:*"), Behavior::hold());
    let first = sample_with_id("test.triggered.json", "value-first");
    assert_eq!(h.post_event(&first).await.status, 202);
    wait_for("the first run's task to run", LONG, || {
        !h.sim.runtime().held().is_empty()
    })
    .await;
    let mut second = sample_with_id("test.triggered.json", "value-second");
    second["data"].as_object_mut().unwrap().remove("deployment");
    assert_eq!(h.post_event(&second).await.status, 202);
    let refused = h.wait_finished("value-second", LONG).await;
    assert_eq!(refused.data["status"], "errored");
    let message = refused.data["message"].as_str().unwrap();
    assert!(
        message.contains(
            "task 'second': env HOST: JSONPath $.data.deployment.deploymentURIsLocal[0] \
             resolves to nothing in the event"
        ),
        "{message}"
    );
    h.sim.release(&h.sim.runtime().held()[0].1);
    let finished = h.wait_finished("value-first", LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let jobs = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.resource == "jobs" && r.verb == "create" && r.status == 201)
        .count();
    assert_eq!(jobs, 2, "the first run's two Jobs, none of the second's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_finished_was_sent_but_not_recorded() {
    let mut h = Harness::start(&[]).await;
    let mut killed = false;
    h.sink.set_policy(move |event| {
        if event.event_type.ends_with(".finished") && !killed {
            killed = true;
            support::Reply::KillOperator
        } else {
            support::Reply::Accept
        }
    });
    let event = sample_with_id("test.triggered.json", "crash-finished");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the operator to be killed", LONG, || !h.operator_running()).await;
    h.start_operator().await;
    wait_for("the repeated .finished", LONG, || {
        h.sink.of_type(".finished").len() >= 2
    })
    .await;
    assert_recovered(&h, "crash-finished").await;
    wait_for("the delivery to be recorded", LONG, || {
        h.jobruns()[0]["status"]["finished"]["state"] == "Delivered"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_outage_answers_503_and_loses_nothing() {
    let h = Harness::start(&[]).await;
    h.sim.pause().await;
    let event = sample_with_id("test.triggered.json", "outage-1");
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 503, "{:?}", response.body);
    assert_eq!(response.headers["retry-after"], "5");
    h.sim.resume().await.unwrap();
    assert!(h.jobruns().is_empty(), "nothing half-created");
    // The sender retries, as a 503 asks it to: the run is created now (not found as a
    // duplicate of something the outage let through), and runs once.
    let retry = h.post_event(&event).await;
    assert_created(&retry);
    let finished = h.wait_finished("outage-1", LONG).await;
    assert_eq!(finished.data["status"], "succeeded");
    assert_eq!(h.jobruns().len(), 1);
}

/// A watch that failed to start again once and then resumed says nothing until an object
/// changes (kube-runtime yields no event for it): in a quiet cluster its failure would keep
/// `/readyz` at 503, the Service without endpoints, for good. It holds two minutes unless the
/// watch fails again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_resumed_in_a_quiet_cluster_leaves_the_replica_ready() {
    let h = Harness::start(&[]).await;
    readyz_until(&h, LONG, |(status, _)| *status == 200).await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(500)
            .verb("watch")
            .resource("jobruns")
            .times(1),
    );
    h.sim.close_watches();
    let (_, why) = readyz_until(&h, LONG, |(status, _)| *status == 503).await;
    assert!(why.contains("500"), "{why}");
    readyz_until(&h, Duration::from_secs(150), |(status, _)| *status == 200).await;
    assert!(h.jobruns().is_empty(), "no object changed meanwhile");
    assert_eq!(h.sim.faults().pending(), Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_api_errors_and_dropped_watches_neither_lose_nor_duplicate_runs() {
    let h = Harness::start(&[]).await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(500)
            .verb("create")
            .resource("jobruns")
            .times(1),
    );
    let event = sample_with_id("test.triggered.json", "faults-1");
    assert_eq!(h.post_event(&event).await.status, 503);
    // A run the API server will never store (too large for it) is refused for good: no
    // Retry-After, so the sender does not retry for ever. (Its failure, stored in its place to
    // report it, is refused too here: nothing is stored.)
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(413)
            .verb("create")
            .resource("jobruns")
            .times(2),
    );
    let refused = h.post_event(&event).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert!(refused.headers.get("retry-after").is_none());
    let run = &refused.body["events"][0]["runs"][0];
    assert_eq!(run["status"], "refused", "{:?}", refused.body);
    assert!(
        run["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("the Kubernetes API refuses to store the run: "),
        "{:?}",
        refused.body
    );
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(409)
            .verb("create")
            .resource("jobs")
            .times(1),
    );
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(500)
            .verb("patch")
            .resource("jobruns/status")
            .times(2),
    );
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(429)
            .verb("create")
            .resource("configmaps")
            .times(1)
            .retry_after(1),
    );
    h.sim
        .runtime()
        .set(ImageRule::image("locustio/locust:*"), Behavior::hold());
    // The refused first delivery stored nothing: the retry creates the run.
    let retry = h.post_event(&event).await;
    assert_created(&retry);
    wait_for("the locust task to run", LONG, || {
        !h.sim.runtime().held().is_empty()
    })
    .await;
    h.sim.close_watches();
    h.sim.release(&h.sim.runtime().held()[0].1);
    assert_recovered(&h, "faults-1").await;
    assert_eq!(h.jobruns().len(), 1);
    // Every injected fault was met by the operator (not skipped by a path it never took).
    assert_eq!(h.sim.faults().pending(), Vec::new());
}

/// A run that finishes while the run watch is down leaves that watch without a deletion event,
/// so what the operator wrote of it is still kept when the watch comes back by re-listing. A run
/// re-created under its name (the same event delivered again once the first run is deleted, as
/// after its retention) runs all the same: what was written belongs to the first run's uid.
/// (Without that, the new run was taken for the finished one and never started.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_recreated_under_the_name_of_one_that_left_during_a_relist_runs() {
    let h = Harness::start(&[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("locustio/locust:*"), Behavior::hold());
    let event = sample_with_id("test.triggered.json", "relist-1");
    assert_created(&h.post_event(&event).await);
    wait_for("the locust task to run", LONG, || {
        !h.sim.runtime().held().is_empty()
    })
    .await;
    // The run watch goes down, and stays down while the run finishes.
    h.fail_watches("jobruns");
    h.sim.release(&h.sim.runtime().held()[0].1);
    h.wait_finished("relist-1", LONG).await;
    wait_for("the delivery to be recorded", LONG, || {
        h.jobruns()[0]["status"]["finished"]["state"] == "Delivered"
    })
    .await;
    // Its history expired: the watch comes back by listing the runs, without this one.
    let lists = || {
        h.sim
            .requests()
            .iter()
            .filter(|r| r.verb == "list" && r.resource == "jobruns")
            .count()
    };
    let listed = lists();
    h.relist_watches();
    wait_for("the run watch to re-list", LONG, || lists() > listed).await;
    h.kubectl(&[
        "delete",
        "jobruns.job-executor.dev",
        "--all",
        "-n",
        "default",
    ]);
    wait_for("the run and its Jobs to be gone", LONG, || {
        h.jobruns().is_empty()
            && h.sim
                .list_objects("batch", "jobs", Some("default"))
                .is_empty()
    })
    .await;
    h.sim.runtime().clear();
    assert_created(&h.post_event(&event).await);
    wait_for("the re-created run to start", LONG, || {
        h.sink
            .for_trigger("relist-1")
            .iter()
            .filter(|e| e.event_type.ends_with(".started"))
            .count()
            >= 2
    })
    .await;
}

/// A watch that keeps failing (here the pods') holds up no other run: its errors stay with the
/// watch (reported, retried after its own backoff) instead of reaching the controller, whose
/// trigger backoff, grown by each of them up to 30 s, paused every run's reconciles (found on
/// the real API server, after a restart: `tests/real_cluster_restart.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_watch_does_not_hold_up_the_other_runs() {
    let h = Harness::start(&[]).await;
    h.fail_watches("pods");
    // Long enough for a backoff that doubles from 0.8 s with each failure to grow past seconds;
    // then events a few seconds apart: a paused controller took each up only when its pause
    // (up to the backoff's cap) was over.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let ids = [
        "watch-failing-1",
        "watch-failing-2",
        "watch-failing-3",
        "watch-failing-4",
    ];
    for id in ids {
        let posted = std::time::Instant::now();
        assert_created(
            &h.post_event(&sample_with_id("test.triggered.json", id))
                .await,
        );
        wait_for("the run to start", LONG, || {
            h.sink
                .for_trigger(id)
                .iter()
                .any(|e| e.event_type.ends_with(".started"))
        })
        .await;
        // Sending `.started` needs no pod. Paused by the trigger backoff (past 12 s of
        // failures, each pause 12.8 s and more), an event waited out the rest of a pause.
        assert!(
            posted.elapsed() < Duration::from_secs(8),
            "{id} started {:?} after its event",
            posted.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    h.sim.faults().clear();
    for id in ids {
        h.wait_succeeded(id, LONG).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_delays_finished_until_the_sink_is_back() {
    let h = Harness::start(&[]).await;
    let mut refused = 0;
    h.sink.set_policy(move |event| {
        if event.event_type.ends_with(".finished") && refused < 2 {
            refused += 1;
            support::Reply::Unavailable
        } else {
            support::Reply::Accept
        }
    });
    let event = sample_with_id("test.triggered.json", "sink-down");
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("sink-down", LONG).await;
    assert_eq!(finished.data["status"], "succeeded");
    let run = &h.jobruns()[0];
    wait_for("the delivery to be recorded", LONG, || {
        h.jobruns()[0]["status"]["finished"]["state"] == "Delivered"
    })
    .await;
    assert_eq!(h.jobruns()[0]["status"]["finished"]["attempts"], 3, "{run}");
    assert!(
        h.jobruns()[0]["status"]["finished"]
            .get("nextAttempt")
            .is_none(),
        "no attempt is due once it is delivered: {run}"
    );
}

/// A sink that takes `.started` and never answers holds nothing up: each attempt ends at the
/// sink's timeout and is recorded and retried while the tasks run. The lease's renewals carry
/// an attempt past the renew deadline (2 s here, under the sink's 3 s timeout): a request is
/// dropped only when the lease would lapse, not when its first renewal is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_never_answers_holds_nothing_up() {
    let mut args = support::SHORT_LEASE.to_vec();
    args.extend(["--sink-timeout-seconds", "3"]);
    let h = Harness::start(&args).await;
    h.sink.set_policy(|event| {
        if event.event_type.ends_with(".started") {
            support::Reply::Hang
        } else {
            support::Reply::Accept
        }
    });
    let event = sample_with_id("test.triggered.json", "sink-hangs");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the run to succeed while .started is retried", LONG, || {
        h.jobruns()
            .first()
            .is_some_and(|run| run["status"]["phase"] == "Succeeded")
    })
    .await;
    let run = h.jobruns()[0].clone();
    let started = &run["status"]["started"];
    assert_eq!(started["state"], "Pending", "{run}");
    assert!(started["attempts"].as_u64().unwrap() >= 1, "{run}");
    assert_eq!(
        started["lastError"], "the sink did not answer within 3s",
        "{run}"
    );
    assert!(
        h.sink.of_type(".finished").is_empty(),
        ".finished follows .started"
    );

    h.sink.accept_all();
    let finished = h.wait_finished("sink-hangs", LONG).await;
    assert_eq!(finished.data["status"], "succeeded");
}

/// The sink's CA bundle is read again when it changes: a sink whose certificate comes from a
/// CA the operator did not trust yet (an issuer renewed before its bundle reached the operator)
/// is trusted once the bundle is rotated, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_sink_ca_bundle_is_trusted_without_a_restart() {
    let mut h = Harness::start(&[]).await;
    let [renewed, former] = ["renewed", "former"].map(|name| {
        let dir = h.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        support::TestTls::new(&dir)
    });
    let https_url = h.sink.serve_tls(&renewed).await;
    let bundle = h.dir.join("sink-ca.pem");
    std::fs::copy(&former.ca_file, &bundle).unwrap();
    h.kill_operator();
    for (flag, value) in [
        ("--sink-url", https_url.as_str()),
        ("--sink-ca-file", support::path_str(&bundle)),
        ("--sink-backoff-delay", "200ms"),
    ] {
        h.set_flag(flag, value);
    }
    h.start_operator().await;
    let event = sample_with_id("test.triggered.json", "ca-rotated");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("a refused attempt at .started", LONG, || {
        h.jobruns().first().is_some_and(|run| {
            run["status"]["started"]["lastError"]
                .as_str()
                .is_some_and(|error| error.contains("cannot reach the sink"))
        })
    })
    .await;
    assert!(h.sink.events().is_empty());
    std::fs::copy(&renewed.ca_file, &bundle).unwrap();
    let finished = h.wait_finished("ca-rotated", LONG).await;
    assert_eq!(finished.data["status"], "succeeded");

    // A bundle that cannot be used (written half) is said once; what was trusted stays.
    std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\nhalf").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    for id in ["ca-broken-1", "ca-broken-2"] {
        let event = sample_with_id("test.triggered.json", id);
        assert_eq!(h.post_event(&event).await.status, 202);
        let finished = h.wait_finished(id, LONG).await;
        assert_eq!(finished.data["status"], "succeeded");
    }
    let log = h.operator_log();
    assert_eq!(
        log.matches("the CA bundle cannot be used").count(),
        1,
        "{log}"
    );
}

/// Knative-style delivery: an https:// sink trusted through a CA bundle, its token read from
/// a header file that is rotated while the operator runs, a bounded number of linear retries,
/// and a dead-letter sink that receives what the sink would not take, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_sink_a_rotated_token_and_a_dead_letter_sink() {
    let mut h = Harness::start(&[]).await;
    let tls = support::TestTls::new(&h.dir);
    let https_url = h.sink.serve_tls(&tls).await;
    let dead_letters = support::TestSink::start().await;
    let header_file = h.dir.join("sink-headers");
    std::fs::write(
        &header_file,
        "# the sink's token\nAuthorization: Bearer first\n",
    )
    .unwrap();
    h.kill_operator();
    for (flag, value) in [
        ("--sink-url", https_url.as_str()),
        ("--sink-ca-file", support::path_str(&tls.ca_file)),
        ("--sink-header-file", support::path_str(&header_file)),
        ("--sink-retries", "2"),
        ("--sink-backoff-policy", "linear"),
        ("--sink-backoff-delay", "100ms"),
        ("--dead-letter-sink-url", dead_letters.url.as_str()),
    ] {
        h.set_flag(flag, value);
    }
    h.start_operator().await;

    // Over TLS, with the token of the file.
    let event = sample_with_id("test.triggered.json", "tls-first");
    assert_eq!(h.post_event(&event).await.status, 202);
    h.wait_finished("tls-first", LONG).await;
    for received in h.sink.for_trigger("tls-first") {
        assert_eq!(received.headers["authorization"], "Bearer first");
    }

    // The Secret is rotated: the next attempts carry the new token. The sink is down for the
    // next `.finished`: the first attempt and two retries, then the dead-letter sink has it.
    std::fs::write(&header_file, "Authorization: Bearer second\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&header_file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = tokens.clone();
    h.sink.set_policy(move |event| {
        let token = event.headers["authorization"].to_str().unwrap().to_string();
        seen.lock().unwrap().push(token);
        if event.event_type.ends_with(".finished") {
            support::Reply::Unavailable
        } else {
            support::Reply::Accept
        }
    });
    let event = sample_with_id("test.triggered.json", "tls-dead");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the dead letter", LONG, || {
        !dead_letters.for_trigger("tls-dead").is_empty()
    })
    .await;
    let letter = &dead_letters.for_trigger("tls-dead")[0];
    assert!(letter.event_type.ends_with(".finished"), "{letter:?}");
    assert_eq!(letter.data["status"], "succeeded", "the event itself");
    let header = |name: &str| letter.headers[name].to_str().unwrap().to_string();
    assert_eq!(header("ce-deliveryerrordest"), https_url);
    assert_eq!(header("ce-deliveryattempts"), "3");
    assert!(header("ce-deliveryerror").contains("503"), "{letter:?}");
    assert!(
        !letter.headers.contains_key("authorization"),
        "the sink's token stays with the sink"
    );
    assert_eq!(letter.sdk_error, None, "the SDK reads the dead letter");
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(
        tokens.len(),
        4,
        ".started, then .finished three times: {tokens:?}"
    );
    assert!(tokens.iter().all(|t| t == "Bearer second"), "{tokens:?}");

    // The run says so: given up at the sink, taken by the dead-letter sink.
    let name = h
        .jobruns()
        .into_iter()
        .find(|r| r["spec"]["event"]["id"] == "tls-dead")
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
        .unwrap();
    let dead_lettered = || {
        let run: Value =
            serde_json::from_str(&h.kubectl(&["get", "jobrun", &name, "-o", "json"])).unwrap();
        let finished = &run["status"]["finished"];
        let condition = run["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "EventsDelivered").cloned())
            .unwrap_or_default();
        finished["state"] == "GaveUp"
            && finished["attempts"] == 3
            && finished["deadLetter"]["state"] == "Delivered"
            && condition["status"] == "False"
            && condition["reason"] == "DeadLettered"
    };
    wait_for("the status to say so", LONG, dead_lettered).await;
    let block = support::doc_sh_block(
        "docs/operator.md",
        "### Delivering `.started` and `.finished`",
    );
    let shown = support::run_shell(&block, &h.kubeconfig, "default", &[("RUN", &name)]);
    assert_eq!(
        shown.trim(),
        "GaveUp Delivered",
        "what docs/operator.md says it prints"
    );
    let (_, metrics) = h.get_admin("/metrics").await;
    for line in [
        "job_executor_event_deliveries_total{kind=\"finished\",outcome=\"gave_up\"} 1",
        "job_executor_dead_letter_deliveries_total{kind=\"finished\",outcome=\"delivered\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    wait_for("the run's history to say so", LONG, || {
        h.kubectl(&["describe", "jobrun", &name])
            .contains("sent to the dead-letter sink")
    })
    .await;

    // Without the CA bundle the sink is not trusted: nothing is sent to it, and the dead
    // letter says why.
    h.sink.accept_all();
    h.kill_operator();
    let ca = h.args.iter().position(|a| a == "--sink-ca-file").unwrap();
    h.args.drain(ca..ca + 2);
    h.set_flag("--sink-retries", "0");
    h.start_operator().await;
    let event = sample_with_id("test.triggered.json", "tls-untrusted");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the untrusted sink's dead letter", LONG, || {
        !dead_letters.for_trigger("tls-untrusted").is_empty()
    })
    .await;
    let letter = &dead_letters.for_trigger("tls-untrusted")[0];
    let reason = letter.headers["ce-deliveryerror"].to_str().unwrap();
    assert!(reason.contains("certificate"), "{reason}");
    assert!(h.sink.for_trigger("tls-untrusted").is_empty());
}

/// One run's trace, as a local OTLP collector receives it: the event's `traceparent` is the
/// parent of its ingest span, each reconcile of the run a child of that, each step a child of
/// its reconcile; the `.finished` event continues the trace from its delivery's span and each
/// task's pod from its Job's creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_s_spans_continue_the_event_s_trace_and_reach_the_collector() {
    let collector = support::TestCollector::start().await;
    let h = Harness::start(&["--otlp-endpoint", &collector.url]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let mut event = sample_with_id("test.triggered.json", "traced");
    event["traceparent"] = json!(format!("00-{trace_id}-{caller}-01"));
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("traced", LONG).await;
    // An event that starts nothing (planned from its sketch, not parsed whole) has its span.
    let unrelated_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let mut unrelated = sample_with_id("test.triggered.json", "unrelated");
    unrelated["type"] = json!("sh.keptn.event.nothing.triggered");
    unrelated["traceparent"] = json!(format!("00-{unrelated_trace}-{caller}-01"));
    assert_eq!(h.post_event(&unrelated).await.status, 200);
    // SIGTERM: the operator exports what it still holds before it exits.
    assert!(h.terminate_operator(LONG).await.success());

    let all = collector.spans();
    let unrelated_spans: Vec<&Value> = all
        .iter()
        .filter(|s| s["traceId"] == unrelated_trace)
        .collect();
    assert_eq!(unrelated_spans.len(), 1, "{unrelated_spans:#?}");
    assert_eq!(unrelated_spans[0]["name"], "ingest");
    assert_eq!(unrelated_spans[0]["parentSpanId"], caller);
    let spans: Vec<Value> = all
        .into_iter()
        .filter(|s| s["traceId"] == trace_id)
        .collect();
    let named =
        |name: &str| -> Vec<&Value> { spans.iter().filter(|s| s["name"] == name).collect() };
    let id = |span: &Value| span["spanId"].as_str().unwrap().to_string();
    let ingest = named("ingest");
    assert_eq!(ingest.len(), 1, "{spans:#?}");
    assert_eq!(
        ingest[0]["parentSpanId"], caller,
        "the caller's span is the parent"
    );
    assert_eq!(ingest[0]["kind"], 2, "a server span");
    let reconciles = named("reconcile");
    assert!(!reconciles.is_empty(), "{spans:#?}");
    for reconcile in &reconciles {
        assert_eq!(reconcile["parentSpanId"], id(ingest[0]).as_str());
    }
    let reconcile_ids: Vec<String> = reconciles.iter().map(|s| id(s)).collect();
    let jobs = named("create_job");
    let sends = named("send");
    assert_eq!(jobs.len(), 2, "one per task: {spans:#?}");
    assert_eq!(sends.len(), 2, ".started and .finished: {spans:#?}");
    for step in jobs.iter().chain(&sends).chain(&named("record")) {
        let parent = step["parentSpanId"].as_str().unwrap().to_string();
        assert!(reconcile_ids.contains(&parent), "{step:#}");
    }
    for step in jobs.iter().chain(&sends) {
        assert_eq!(step["kind"], 3, "a client span: {step:#}");
    }
    let traceparent = finished.headers["ce-traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        sends
            .iter()
            .any(|s| traceparent == format!("00-{trace_id}-{}-01", id(s))),
        "{traceparent} continues from a delivery's span"
    );
    for (index, job) in h.jobs_created().iter().enumerate() {
        let runs = h.sim.pod_runs(job);
        let task = runs.iter().find(|r| r.run.container == "task").unwrap();
        let pod_parent = task.run.env_var("TRACEPARENT").unwrap().to_string();
        assert!(
            jobs.iter()
                .any(|s| pod_parent == format!("00-{trace_id}-{}-01", id(s))),
            "task {index}: {pod_parent} continues from its Job's creation"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_message_and_the_operator_keeps_serving() {
    let h = Harness::start(&["--ingest-token", "s3cret", "--max-body-bytes", "4096"]).await;
    let auth = ("authorization", "Bearer s3cret");
    let structured = ("content-type", "application/cloudevents+json");

    let response = h
        .post(&[structured], sample("test.triggered.json").to_string())
        .await;
    assert_eq!(response.status, 401);
    assert_eq!(response.headers["www-authenticate"], "Bearer");
    let response = h
        .post(&[structured, ("authorization", "Bearer wrong")], "{}")
        .await;
    assert_eq!(response.status, 401);

    let response = h.post(&[structured, auth], "{\"specversion\": ").await;
    assert_eq!(response.status, 400);
    assert!(
        response.body["error"]
            .as_str()
            .unwrap()
            .starts_with("the body is not valid JSON"),
        "{:?}",
        response.body
    );

    let response = h
        .post(
            &[structured, auth],
            json!({"specversion": "1.0", "source": "s", "type": "t"}).to_string(),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body["error"], "missing required attribute \"id\"");
    // Two events whose `source` and `id` differ only around a NUL would hash to one run name.
    let response = h
        .post(
            &[structured, auth],
            json!({"specversion": "1.0", "id": "1\u{0}2", "source": "s", "type": "t"}).to_string(),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body["error"],
        "attribute \"id\" holds U+0000 at character 2: CloudEvents attribute strings must not \
         hold control characters or noncharacters"
    );

    // A time that says no instant, in either mode (the structured one read as a sketch).
    let mut untimed = sample("test.triggered.json");
    untimed["time"] = json!("2026-12-01 at ten");
    let response = h.post(&[structured, auth], untimed.to_string()).await;
    assert_eq!(response.status, 400);
    let told = "attribute \"time\" is not an RFC 3339 timestamp with an offset (such as \
                2026-12-01T10:00:00.000Z, at most nine digits of a second): \"2026-12-01 at ten\"";
    assert_eq!(response.body["error"], told);
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "untimed-1"),
        ("ce-source", "s"),
        ("ce-type", "t"),
        ("ce-time", "2026-12-01%20at%20ten"),
        auth,
    ];
    let response = h.post(&binary, "").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body["error"], told);
    assert!(h.jobruns().is_empty());

    // What the HTTP binding allows and refuses, through the binary.
    let batch = ("content-type", "application/cloudevents-batch+json");
    let response = h.post(&[batch, auth], "[]").await;
    assert_eq!(response.status, 200, "a batch may be empty");
    assert_eq!(response.body, json!({"events": []}));
    let response = h
        .post(
            &[structured, auth, ("content-encoding", "gzip")],
            sample("test.triggered.json").to_string(),
        )
        .await;
    assert_eq!(response.status, 415);
    assert_eq!(
        response.body["error"],
        "unsupported content encoding \"gzip\": send the body uncompressed (Content-Encoding: \
         identity, or none)"
    );
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "twice-1"),
        ("ce-id", "twice-2"),
        ("ce-source", "s"),
        ("ce-type", "t"),
        auth,
    ];
    let response = h.post(&binary, "").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body["error"], "header ce-id: given more than once");

    let response = h
        .post(&[("content-type", "text/plain"), auth], "hello")
        .await;
    assert_eq!(response.status, 415);
    assert!(
        response.body["error"]
            .as_str()
            .unwrap()
            .starts_with("unsupported content type \"text/plain\"")
    );

    let mut big = sample("test.triggered.json");
    big["data"]["padding"] = json!("x".repeat(8000));
    let response = h.post(&[structured, auth], big.to_string()).await;
    assert_eq!(response.status, 413);
    assert_eq!(
        response.body["error"],
        "the body is larger than the limit of 4096 bytes (--max-body-bytes)"
    );

    assert!(h.jobruns().is_empty());
    // Still serving: a good event runs.
    let event = sample_with_id("test.triggered.json", "after-bad-input");
    let response = h.post(&[structured, auth], event.to_string()).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    h.wait_finished("after-bad-input", LONG).await;
}

/// Writes `token` as the kubelet updates a mounted Secret: a new timestamped directory, then
/// `..data` swapped to it in one rename; `token` links through `..data`.
fn kubelet_secret_update(dir: &std::path::Path, version: &str, token: &str) {
    use std::os::unix::fs::symlink;
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("token"), token).unwrap();
    // Later than any earlier version, however coarse the file system's clock.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(data.join("token"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    symlink(format!("..{version}"), &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
    if std::fs::symlink_metadata(dir.join("token")).is_err() {
        symlink("..data/token", dir.join("token")).unwrap();
    }
}

/// Posts `event` with a bearer token.
async fn post_with_token(h: &Harness, event: &Value, token: &str) -> support::Response {
    let auth = format!("Bearer {token}");
    h.post(
        &[
            ("content-type", "application/cloudevents+json"),
            ("authorization", auth.as_str()),
        ],
        event.to_string(),
    )
    .await
}

/// Posts `event` with `token` until the answer is `status` (a token file is read again within
/// a second of a change), and returns that answer.
async fn post_until(
    h: &Harness,
    event: &Value,
    token: &str,
    status: u16,
    what: &str,
) -> support::Response {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let response = post_with_token(h, event, token).await;
        if response.status == status {
            return response;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The bearer token from a file: rotated by rewriting the file, and by the kubelet's update of
/// a mounted Secret, without a restart; an unreadable file is the operator's problem (503),
/// not the sender's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_rotated_without_a_restart() {
    let dir = support::fresh_dir("token");
    let token_file = dir.join("plain-token");
    std::fs::write(&token_file, "first\n").unwrap();
    let h = Harness::start(&["--ingest-token-file", token_file.to_str().unwrap()]).await;
    // An event no action listens for: answered 200 once the sender is let in.
    let mut event = sample_with_id("test.triggered.json", "rotation");
    event["type"] = json!("sh.keptn.event.nothing.triggered");
    assert_eq!(post_with_token(&h, &event, "first").await.status, 200);
    assert_eq!(post_with_token(&h, &event, "second").await.status, 401);
    std::fs::write(&token_file, "second\n").unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&token_file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    post_until(
        &h,
        &event,
        "second",
        200,
        "the new token was never accepted",
    )
    .await;
    let old = post_with_token(&h, &event, "first").await;
    assert_eq!(old.status, 401);
    assert_eq!(old.body["error"], "missing or wrong bearer token");
    let open = "events over HTTP are accepted from anyone who reaches the port";
    assert!(!h.operator_log().contains(open), "{}", h.operator_log());
    drop(h);

    // A mounted Secret (as the chart mounts the token), updated by the kubelet.
    let mounted = dir.join("mounted");
    kubelet_secret_update(&mounted, "v1", "third");
    let token_file = mounted.join("token");
    let h = Harness::start(&["--ingest-token-file", token_file.to_str().unwrap()]).await;
    assert_eq!(post_with_token(&h, &event, "third").await.status, 200);
    kubelet_secret_update(&mounted, "v2", "second");
    let what = "the Secret's new token was never accepted";
    post_until(&h, &event, "second", 200, what).await;
    assert_eq!(post_with_token(&h, &event, "third").await.status, 401);
    std::fs::remove_file(&token_file).unwrap();
    let what = "a missing token file is never noticed";
    let gone = post_until(&h, &event, "second", 503, what).await;
    assert!(
        gone.body["error"].as_str().unwrap().starts_with(&format!(
            "the ingest token cannot be read from {}",
            token_file.display()
        )),
        "{:?}",
        gone.body
    );
    assert!(h.operator_running());
}

/// HMAC signatures over the body: a good one is accepted once (a copy refused first does not
/// spend it); a wrong, missing, expired or replayed one is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_signed_events_are_accepted_once_and_bad_signatures_refused() {
    use job_executor::ingest::auth::sign;
    let dir = support::fresh_dir("hmac");
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, "webhook-secret\n").unwrap();
    let h = Harness::start(&["--ingest-hmac-secret-file", secret_file.to_str().unwrap()]).await;
    let now = support::unix_now();
    let structured = ("content-type", "application/cloudevents+json");
    let body = sample_with_id("test.triggered.json", "signed-1").to_string();
    let signed =
        |secret: &[u8], at: u64, body: &str| (sign(secret, at, body.as_bytes()), at.to_string());
    let post = |signature: &(String, String), body: &str| {
        let (signature, timestamp) = signature.clone();
        let body = body.to_string();
        let h = &h;
        async move {
            h.post(
                &[
                    structured,
                    ("x-signature-256", signature.as_str()),
                    ("x-signature-timestamp", timestamp.as_str()),
                ],
                body,
            )
            .await
        }
    };
    let good = signed(b"webhook-secret", now, &body);
    // A copy sent first with a header the signature does not cover changed is refused, and
    // does not spend the signature of the request itself.
    let copy = h
        .post(
            &[
                ("content-type", "text/plain"),
                ("x-signature-256", good.0.as_str()),
                ("x-signature-timestamp", good.1.as_str()),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(copy.status, 415, "{:?}", copy.body);
    let accepted = post(&good, &body).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    h.wait_finished("signed-1", LONG).await;

    let replayed = post(&good, &body).await;
    assert_eq!(replayed.status, 401);
    assert_eq!(
        replayed.body["error"],
        "the signature was already used (sign each delivery anew)"
    );
    let other = sample_with_id("test.triggered.json", "signed-2").to_string();
    for (signature, body, error) in [
        (
            signed(b"webhook-secret", now, &body),
            other.as_str(),
            "the signature does not match the body",
        ),
        (
            signed(b"another-secret", now, &other),
            other.as_str(),
            "the signature does not match the body",
        ),
        (
            signed(b"webhook-secret", now - 400, &other),
            other.as_str(),
            "s away from now, outside the window of 300 s (sign each delivery when it is sent)",
        ),
    ] {
        let refused = post(&signature, body).await;
        assert_eq!(refused.status, 401, "{error}");
        assert!(
            refused.body["error"].as_str().unwrap().ends_with(error),
            "{:?}",
            refused.body
        );
    }
    let missing = h.post(&[structured], other.clone()).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.body["error"],
        "missing x-signature-256 or x-signature-timestamp header"
    );
    // Binary mode: the event's id and type are in headers the signature does not cover (a
    // replay to another replica, whose memory of signatures is its own, could change them).
    let data = sample_with_id("test.triggered.json", "signed-3")["data"].to_string();
    let (signature, timestamp) = signed(b"webhook-secret", now, &data);
    let binary = h
        .post(
            &[
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-id", "signed-3"),
                ("ce-source", "shipyard-controller"),
                ("ce-type", "sh.keptn.event.test.triggered"),
                ("x-signature-256", signature.as_str()),
                ("x-signature-timestamp", timestamp.as_str()),
            ],
            data,
        )
        .await;
    assert_eq!(binary.status, 400, "{:?}", binary.body);
    assert!(
        binary.body["error"]
            .as_str()
            .unwrap()
            .starts_with("a signed request carries its event in its body"),
        "{:?}",
        binary.body
    );
    // Nothing of the refused requests was stored.
    assert_eq!(h.jobruns().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_batch_modes_are_accepted() {
    let h = Harness::start(&[]).await;
    let event = sample_with_id("test.triggered.json", "binary-1");
    let data = event["data"].to_string();
    let response = h
        .post(
            &[
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-id", "binary-1"),
                ("ce-source", "shipyard-controller"),
                ("ce-type", "sh.keptn.event.test.triggered"),
                ("ce-shkeptncontext", "5f0b6c2e-3d4a-4b8f-9e1c-2a7d6f3b8c90"),
            ],
            data,
        )
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);

    let batch = json!([
        sample_with_id("test.triggered.json", "batch-1"),
        sample_with_id("deployment.finished.json", "batch-2"),
        sample_with_id("release.triggered.json", "batch-3"),
    ]);
    let response = h
        .post(
            &[("content-type", "application/cloudevents-batch+json")],
            batch.to_string(),
        )
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let events = response.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["runs"][0]["action"], "Audit every finished task");
    assert_eq!(events[2]["runs"][0]["action"], "Release notes");
    h.wait_finished("binary-1", LONG).await;
    h.wait_finished("batch-1", LONG).await;
    let release = h.wait_finished("batch-3", LONG).await;
    assert_eq!(release.data["status"], "succeeded", "{}", release.data);
    // The silent audit action runs its task and sends nothing.
    wait_for("the silent run to finish", LONG, || {
        h.jobruns()
            .iter()
            .any(|r| r["spec"]["action"]["silent"] == true && r["status"]["phase"] == "Succeeded")
    })
    .await;
    assert!(h.sink.for_trigger("batch-2").is_empty());
}

/// JSON data sent as `data_base64` (Python's SDK sends bytes so, whatever their type) is read as
/// `data`, as Keptn's service read it; bytes a JSON `datacontenttype` claims that are not JSON
/// are refused, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_data_sent_as_base64_runs_as_if_sent_as_data() {
    use base64::Engine as _;
    let h = Harness::start(&[]).await;
    let mut event = sample_with_id("test.triggered.json", "base64-1");
    let data = event["data"].take();
    event.as_object_mut().unwrap().remove("data");
    event["data_base64"] =
        json!(base64::engine::general_purpose::STANDARD.encode(data.to_string()));
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let finished = h.wait_finished("base64-1", LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    assert_eq!(finished.data["project"], data["project"]);
    assert_eq!(finished.data["service"], data["service"]);
    let run = h
        .jobruns()
        .into_iter()
        .find(|r| r["spec"]["event"]["id"] == "base64-1")
        .unwrap();
    assert_eq!(run["spec"]["event"]["data"]["stage"], data["stage"]);
    assert!(run["spec"]["event"].get("data_base64").is_none());

    let mut binary = sample_with_id("test.triggered.json", "base64-2");
    binary.as_object_mut().unwrap().remove("data");
    binary["datacontenttype"] = json!("application/json");
    binary["data_base64"] = json!("AAEC/w==");
    let response = h.post_event(&binary).await;
    assert_eq!(response.status, 400, "{:?}", response.body);
    assert!(
        response.body["error"].as_str().unwrap().contains(
            "attribute \"data_base64\" does not hold JSON, which its datacontenttype \"application/json\" says it is"
        ),
        "{:?}",
        response.body
    );
}

/// A batch of many tiny events fits the body limit; without a limit on events per batch it
/// would keep creating runs long after the answer. Refused whole: nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_limit_is_refused_whole_and_stores_nothing() {
    let h = Harness::start(&[]).await;
    let batch = |count: usize| {
        Value::Array(
            (0..count)
                .map(|i| sample_with_id("test.triggered.json", &format!("many-{count}-{i}")))
                .collect(),
        )
        .to_string()
    };
    let batch_type = ("content-type", "application/cloudevents-batch+json");
    let response = h.post(&[batch_type], batch(101)).await;
    assert_eq!(response.status, 413, "{:?}", response.body);
    assert_eq!(
        response.body["error"],
        "the batch holds 101 events, more than the limit of 100 (--max-batch-events); nothing \
         of it was accepted: send it in smaller batches"
    );
    // The limit itself is accepted.
    let response = h.post(&[batch_type], batch(100)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    wait_for("the 100 runs", LONG, || h.jobruns().len() == 100).await;
    assert!(
        h.jobruns().iter().all(|r| r["spec"]["event"]["id"]
            .as_str()
            .unwrap()
            .starts_with("many-100-")),
        "no run of the refused batch"
    );
    let (_, metrics) = h.get_admin("/metrics").await;
    assert!(
        metrics.contains("job_executor_events_received_total{outcome=\"too_large\"} 1"),
        "{metrics}"
    );
}

/// Reads what the server sends on `stream` until it closes it or `within` passes (`None`).
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut received))
        .await
        .ok()
        .map(|_| String::from_utf8_lossy(&received).into_owned())
}

/// Slow senders (headers or body trickled), idle connections and too many connections: each
/// bounded, and the operator keeps serving the senders that behave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_senders_are_cut_off_and_connections_are_bounded() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let h = Harness::start(&["--read-timeout-seconds", "2", "--max-connections", "2"]).await;
    let ingest = h.ingest.unwrap();

    // Too many header fields, and too many header bytes: 431.
    for headers in [
        (0..101)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>(),
        format!("x-big: {}\r\n", "a".repeat(70 * 1024)),
    ] {
        let mut many = TcpStream::connect(ingest).await.unwrap();
        many.write_all(format!("POST /events HTTP/1.1\r\nhost: x\r\n{headers}\r\n").as_bytes())
            .await
            .unwrap();
        let answer = read_until_closed(&mut many, LONG).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    // Headers that never end: the connection is closed after the read timeout.
    let mut slow_headers = TcpStream::connect(ingest).await.unwrap();
    slow_headers
        .write_all(b"POST /events HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let closed = read_until_closed(&mut slow_headers, LONG).await;
    assert!(closed.is_some(), "a sender of endless headers is cut off");
    drop(slow_headers);

    // A body that never ends: 408 with the reason.
    let mut slow_body = TcpStream::connect(ingest).await.unwrap();
    slow_body
        .write_all(
            b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 100\r\n\r\n{\"id\":",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow_body, LONG).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("did not arrive within 2 s (--read-timeout-seconds)"),
        "{answer}"
    );
    drop(slow_body);

    // Two idle connections take both slots: a third sender waits until they are closed for
    // idling, then is served.
    let mut idle = [
        TcpStream::connect(ingest).await.unwrap(),
        TcpStream::connect(ingest).await.unwrap(),
    ];
    // Both accepted before the third connects.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let event = sample_with_id("test.triggered.json", "after-idle").to_string();
    let mut third = TcpStream::connect(ingest).await.unwrap();
    third
        .write_all(
            format!(
                "POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{event}",
                event.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut third, Duration::from_millis(500))
            .await
            .is_none(),
        "the third connection waits while two are open"
    );
    for connection in &mut idle {
        assert!(
            read_until_closed(connection, LONG).await.is_some(),
            "an idle connection is closed after the read timeout"
        );
    }
    let answer = read_until_closed(&mut third, LONG).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    h.wait_finished("after-idle", LONG).await;
}

/// Bodies held by senders that never finish them take from one budget: past
/// `--max-body-bytes-in-flight`, a request is answered 503 with `Retry-After` before its body
/// is read, so open connections cannot hold more memory than the budget; once they are cut off,
/// senders are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_held_at_once_are_bounded_by_the_budget() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let h = Harness::start(&[
        "--read-timeout-seconds",
        "3",
        "--max-body-bytes",
        "65536",
        "--max-body-bytes-in-flight",
        "131072",
    ])
    .await;
    let ingest = h.ingest.unwrap();
    // Two senders declare the largest body and send a byte of it: the budget is held.
    let mut holding = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(ingest).await.unwrap();
        stream
            .write_all(
                b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 65536\r\n\r\n{",
            )
            .await
            .unwrap();
        holding.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = sample_with_id("test.triggered.json", "after-budget");
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 503, "{:?}", response.body);
    assert_eq!(response.headers["retry-after"], "5");
    assert_eq!(
        response.body["error"],
        "bodies of 131072 bytes are being read (--max-body-bytes-in-flight): retry"
    );
    for stream in &mut holding {
        let answer = read_until_closed(stream, LONG).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    h.wait_finished("after-budget", LONG).await;
    let (_, metrics) = h.get_admin("/metrics").await;
    assert_eq!(
        support::metric_value(
            &metrics,
            "job_executor_events_received_total{outcome=\"overloaded\"} "
        ),
        1,
        "{metrics}"
    );
}

/// A body of many tiny JSON values takes far more memory once read than its text (a B-tree
/// node per object): what reading it takes is drawn from `--max-body-bytes-in-flight` before
/// it is read, and a body that would take more than all of it is refused (413) unread, in a
/// batch, in a structured event's data and in a binary-mode event's JSON data alike; the budget
/// is whole again after (an ordinary event is taken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_many_tiny_values_are_counted_as_read_not_as_sent() {
    let h = Harness::start(&[
        "--max-body-bytes",
        "262144",
        "--max-body-bytes-in-flight",
        "4194304",
    ])
    .await;
    let tiny = |count: usize| format!("[{}]", vec![r#"{"":0}"#; count].join(","));
    let batch = tiny(30_000);
    assert!(batch.len() < 262_144);
    let mut event = sample_with_id("test.triggered.json", "tiny-values");
    event["data"]["items"] = serde_json::from_str(&tiny(30_000)).unwrap();
    for (headers, body) in [
        (
            vec![("content-type", "application/cloudevents-batch+json")],
            batch.clone(),
        ),
        (
            vec![("content-type", "application/cloudevents+json")],
            event.to_string(),
        ),
        (
            vec![
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-id", "tiny-binary"),
                ("ce-source", "test"),
                ("ce-type", "sh.keptn.event.test.triggered"),
            ],
            batch.clone(),
        ),
    ] {
        let response = h.post(&headers, body).await;
        assert_eq!(response.status, 413, "{headers:?}: {:?}", response.body);
        let error = response.body["error"].as_str().unwrap();
        assert!(
            error.starts_with("read, its events would take up to ")
                && error.ends_with(
                    " bytes of memory (its JSON holds many small values), more than \
                     --max-body-bytes-in-flight allows for all bodies at once (4194304)"
                ),
            "{error}"
        );
    }
    // Text data of the same size is held as its text.
    let response = h
        .post(
            &[
                ("content-type", "text/plain"),
                ("ce-specversion", "1.0"),
                ("ce-id", "tiny-text"),
                ("ce-source", "test"),
                ("ce-type", "sh.keptn.event.test.finished"),
            ],
            batch,
        )
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let response = h
        .post_event(&sample_with_id("test.triggered.json", "after-tiny"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    h.wait_finished("after-tiny", LONG).await;
    let (_, metrics) = h.get_admin("/metrics").await;
    assert_eq!(
        support::metric_value(
            &metrics,
            "job_executor_events_received_total{outcome=\"too_large\"} "
        ),
        3,
        "{metrics}"
    );
}

/// "Billion laughs": nine levels of nine aliases, a few hundred bytes that would expand to 387
/// million nodes, committed as a service's config. The event is answered at once with where
/// the file passed the limit (`200`: a file that names no event concerns none); the operator
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_of_exponential_aliases_is_refused_without_expanding_it() {
    let dir = std::env::temp_dir().join(format!("je-laughs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    let mut config = String::from("apiVersion: v2\nl0: &l0 [x, x, x, x, x, x, x, x, x]\n");
    for level in 1..=9 {
        let items = vec![format!("*l{}", level - 1); 9].join(", ");
        config.push_str(&format!("l{level}: &l{level} [{items}]\n"));
    }
    std::fs::write(dir.join("carts/job/config.yaml"), &config).unwrap();
    let h = Harness::start_full(kube_sim::Sim::builder(), dir, &[]).await;
    let response = h
        .post_event(&sample_with_id("test.triggered.json", "laughs-1"))
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let message = response.body.to_string();
    assert!(
        message.contains("config.yaml:7:") && message.contains("more than 250000 YAML nodes"),
        "{message}"
    );
    assert!(h.operator_running());
}

/// Every request the fuzz campaigns kept (`fuzz/corpus/cloudevent` and `ingest`: valid events,
/// broken ones, odd content types and headers) sent over HTTP to the running binary: each gets
/// an answer that is not a server error, and the operator keeps serving and running runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fuzz_corpora_sent_to_the_running_binary_get_answers_and_it_keeps_serving() {
    let h = Harness::start(&[]).await;
    let corpus = support::root().join("fuzz/corpus");
    let mut sent = 0;
    for (target, skip_lines) in [("cloudevent", 0), ("ingest", 2)] {
        let mut inputs: Vec<_> = std::fs::read_dir(corpus.join(target))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            // The fuzz layout (fuzz/src/checks.rs): [store and authorization lines], a content
            // type line, `ce-` header lines, an empty line, the body.
            let mut rest = data.as_slice();
            for _ in 0..skip_lines {
                let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
                rest = &rest[(end + 1).min(rest.len())..];
            }
            let split = rest.windows(2).position(|w| w == b"\n\n");
            let (head, body) = match split {
                Some(at) => (&rest[..at], &rest[at + 2..]),
                None => (rest, &[][..]),
            };
            let head = String::from_utf8_lossy(head);
            let mut lines = head.split('\n');
            let mut headers: Vec<(String, String)> = Vec::new();
            if let Some(content_type) = lines.next() {
                headers.push(("content-type".into(), content_type.into()));
            }
            for line in lines {
                let (name, value) = line.split_once(": ").unwrap_or((line, ""));
                headers.push((format!("ce-{name}"), value.into()));
            }
            // What an HTTP client can send at all.
            headers.retain(|(name, value)| {
                http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && http::HeaderValue::from_str(value).is_ok()
            });
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let response = h.post(&headers, body.to_vec()).await;
            assert!(
                response.status.as_u16() < 500,
                "{}: {} {:?}",
                input.display(),
                response.status,
                response.body
            );
            sent += 1;
        }
    }
    assert!(sent > 1000, "{sent} requests");
    assert!(h.operator_running());
    let event = sample_with_id("test.triggered.json", "after-the-corpora");
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let finished = h.wait_finished("after-the-corpora", LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{:?}", finished.data);
    assert!(
        !h.operator_log().contains("panicked"),
        "{}",
        h.operator_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_that_cannot_be_used_are_reported_to_the_sender_and_in_finished() {
    let dir = std::env::temp_dir().join(format!("je-configs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - name: broken\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n      - imag: alpine\n",
    )
    .unwrap();
    let h = Harness::start_full(kube_sim::Sim::builder(), dir, &[]).await;
    let event = sample_with_id("test.triggered.json", "broken-1");
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 422, "{:?}", response.body);
    let error = response.body["events"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("carts/job/config.yaml:6:9: actions[0].tasks[0].imag: unknown key \"imag\""),
        "{error}"
    );
    let finished = h.wait_finished("broken-1", LONG).await;
    assert_eq!(finished.data["status"], "errored");
    assert!(
        finished.data["message"]
            .as_str()
            .unwrap()
            .contains("unknown key \"imag\"")
    );
    assert!(h.jobs_created().is_empty());
    assert_eq!(h.jobruns().len(), 1, "the run that reports it");
    // Another service's task of the same sequence starts nothing, saying why: no `.finished`
    // answers it (an errored one would fail a task this config was not written for).
    let mut evaluation = sample_with_id("test.triggered.json", "broken-evaluation");
    evaluation["type"] = json!("sh.keptn.event.evaluation.triggered");
    let response = h.post_event(&evaluation).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let reason = response.body["events"][0]["not_matched"][0]["reason"]
        .as_str()
        .unwrap();
    assert!(
        reason.starts_with(
            "the job config cannot be used, and no action of it runs for \
             sh.keptn.event.evaluation.triggered as far as it can be read:"
        ) && reason.contains("unknown key \"imag\""),
        "{reason}"
    );
    assert_eq!(h.jobruns().len(), 1, "no run, so no .finished");

    let mut other = sample_with_id("test.triggered.json", "no-config");
    other["data"]["service"] = json!("orders");
    let response = h.post_event(&other).await;
    assert_eq!(response.status, 200);
    assert!(
        response.body["events"][0]["not_matched"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no job config for service \"orders\"")
    );
}

/// An event accepted before its config broke, delivered again (a lost answer): its runs are
/// the answer, `duplicate`; no run reports the config's error beside them (a second, errored
/// `.finished` for one `.triggered`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_accepted_before_its_config_broke_is_a_duplicate_when_sent_again() {
    let dir = support::fresh_dir("broken-later");
    let config = dir.join("carts/job/config.yaml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        "apiVersion: v2\nactions:\n  - name: works\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n      - {name: t, image: alpine}\n",
    )
    .unwrap();
    let h = Harness::start_full(kube_sim::Sim::builder(), dir, &[]).await;
    let event = sample_with_id("test.triggered.json", "broken-later");
    let first = h.post_event(&event).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let run = first.body["events"][0]["runs"][0]["name"].clone();
    assert_eq!(
        h.wait_finished("broken-later", LONG).await.data["status"],
        "succeeded"
    );
    std::fs::write(
        &config,
        "apiVersion: v2\nactions:\n  - name: works\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n      - {name: t, imag: alpine}\n",
    )
    .unwrap();
    let again = h.post_event(&event).await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    assert_eq!(
        again.body["events"][0]["runs"],
        json!([{"name": run, "action": "works", "status": "duplicate"}]),
        "{:?}",
        again.body
    );
    assert_eq!(h.jobruns().len(), 1, "no run reports the error");
    // A new event meets the broken config.
    let fresh = h
        .post_event(&sample_with_id("test.triggered.json", "broken-now"))
        .await;
    assert_eq!(fresh.status, 422, "{:?}", fresh.body);
    assert_eq!(
        h.wait_finished("broken-now", LONG).await.data["status"],
        "errored"
    );
    let finished = h
        .sink
        .for_trigger("broken-later")
        .into_iter()
        .filter(|e| e.event_type.ends_with(".finished"))
        .count();
    assert_eq!(finished, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_events_say_which_listening_actions_refused_them() {
    let h = Harness::start(&[]).await;
    let mut jmeter = sample_with_id("test.triggered.json", "jmeter-1");
    jmeter["data"]["test"]["teststrategy"] = json!("jmeter");
    let response = h.post_event(&jmeter).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let refused = response.body["events"][0]["not_matched"]
        .as_array()
        .unwrap();
    assert!(
        refused.contains(&json!({
            "action": "Run locust",
            "reason": "$.data.test.teststrategy is \"jmeter\", not \"locust\""
        })),
        "{refused:?}"
    );
    // Actions listening for other types are not listed.
    assert!(
        refused.iter().all(|r| r["action"] != "Deploy with helm"),
        "{refused:?}"
    );

    let mut unrelated = sample_with_id("test.triggered.json", "unrelated-1");
    unrelated["type"] = json!("sh.keptn.event.nothing.triggered");
    let response = h.post_event(&unrelated).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.body["events"][0]["not_matched"],
        json!([{"action": "", "reason": "no action listens for event type \"sh.keptn.event.nothing.triggered\""}])
    );
    // Keptn's sequence events are not a task's: whatever the config's globs, nothing starts.
    let mut sequence = sample_with_id("test.triggered.json", "sequence-1");
    sequence["type"] = json!("sh.keptn.event.dev.delivery.triggered");
    let response = h.post_event(&sequence).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.body["events"][0]["not_matched"][0]["reason"],
        "sh.keptn.event.dev.delivery.triggered is not a Keptn task's event \
         (sh.keptn.event.<task>.<kind>): Keptn's sequence, project and service events start no \
         action"
    );
    assert!(h.jobruns().is_empty());
}

/// An installation told which projects and stages it takes (as a Keptn Uniform subscription's
/// filter) starts nothing for the others' events, in either mode, and says why; its own run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_projects_and_stages_the_installation_does_not_take_start_nothing() {
    let h = Harness::start(&["--projects", "podtato, sockshop", "--stages", "prod"]).await;
    let dev = sample_with_id("test.triggered.json", "dev-stage");
    let response = h.post_event(&dev).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let why = "the event is about stage \"dev\", and this installation takes only stages \
               \"prod\" (--stages)";
    assert_eq!(
        response.body["events"][0]["not_matched"],
        json!([{"action": "", "reason": why}])
    );
    // Binary mode: the event read whole, not from a sketch.
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "dev-stage-binary"),
        ("ce-source", "shipyard-controller"),
        ("ce-type", "sh.keptn.event.test.triggered"),
        ("content-type", "application/json"),
    ];
    let response = h.post(&binary, dev["data"].to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.body["events"][0]["not_matched"],
        json!([{"action": "", "reason": why}])
    );
    let mut other = sample_with_id("test.triggered.json", "other-project");
    other["data"]["project"] = json!("other");
    other["data"]["stage"] = json!("prod");
    let response = h.post_event(&other).await;
    assert_eq!(
        response.body["events"][0]["not_matched"][0]["reason"],
        "the event is about project \"other\", and this installation takes only projects \
         \"podtato\", \"sockshop\" (--projects)"
    );
    assert!(h.jobruns().is_empty());
    // Its own project and stage run as without the flags.
    let mut prod = sample_with_id("test.triggered.json", "prod-stage");
    prod["data"]["stage"] = json!("prod");
    assert_eq!(h.post_event(&prod).await.status, 202);
    h.wait_succeeded("prod-stage", LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let h = Harness::start(&[]).await;
    let event = sample_with_id("test.triggered.json", "metrics-1");
    h.post_event(&event).await;
    h.post_event(&event).await;
    h.wait_finished("metrics-1", LONG).await;
    let expected = [
        "job_executor_events_received_total{outcome=\"accepted\"} 1",
        "job_executor_events_received_total{outcome=\"duplicate\"} 1",
        "job_executor_runs_started_total 1",
        "job_executor_jobs_created_total 2",
        "job_executor_event_deliveries_total{kind=\"finished\",outcome=\"delivered\"} 1",
        "job_executor_runs_finished_total{phase=\"Succeeded\"} 1",
        "job_executor_runs_in_flight 0",
        // Done, and its deletion scheduled after the shipped week of retention.
        "job_executor_runs_retained 1",
        // Two tasks, each created once; the run and both its deliveries timed.
        "job_executor_reconcile_step_duration_seconds_count{step=\"create_job\"} 2",
        "job_executor_run_duration_seconds_count{phase=\"Succeeded\"} 1",
        "job_executor_event_delivery_duration_seconds_count{kind=\"started\"} 1",
        "job_executor_event_delivery_duration_seconds_count{kind=\"finished\"} 1",
    ];
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let (status, text) = h.get_admin("/metrics").await;
        assert_eq!(status, 200);
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|l| !text.contains(l))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing {missing:?} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // OpenMetrics, as written: each counter's `# TYPE` names it without `_total`, and the text
    // ends in `# EOF` (Prometheus reads the classic text format's name as that format).
    let (_, text) = h.get_admin("/metrics").await;
    assert!(
        text.contains("# TYPE job_executor_runs_started counter\n") && text.ends_with("# EOF\n"),
        "{text}"
    );
    assert_eq!(
        h.admin_content_type("/metrics").await.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert_eq!(h.get_admin("/livez").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_logs_are_cut_to_the_cap_and_the_finished_event_still_arrives() {
    let h = Harness::start(&["--log-excerpt-bytes", "4096"]).await;
    // About 10 MiB: the tail is the log's own end, however long the log.
    let lines: Vec<String> = (0..500_000).map(|i| format!("request {i} ok")).collect();
    h.sim.runtime().set(
        ImageRule::image("locustio/locust:*"),
        Behavior::exit(0).output(lines),
    );
    let event = sample_with_id("test.triggered.json", "big-logs");
    assert_eq!(h.post_event(&event).await.status, 202);
    let data = finished_data(&h, "big-logs").await;
    assert_eq!(data["status"], "succeeded");
    let message = data["message"].as_str().unwrap();
    assert!(message.len() < 4096 + 512, "{}", message.len());
    assert!(message.contains("request 0 ok"), "the head is kept");
    assert!(message.ends_with("request 499999 ok"), "the tail is kept");
    assert!(message.contains("bytes omitted ...]"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_sink_refuses_is_given_up_and_the_run_says_so() {
    let h = Harness::start(&["--sink-mode", "structured"]).await;
    h.sink.set_policy(|_| support::Reply::Refuse);
    let event = sample_with_id("test.triggered.json", "refused");
    assert_eq!(h.post_event(&event).await.status, 202);
    wait_for("the run to give up", LONG, || {
        h.jobruns().first().is_some_and(|run| {
            run["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["type"] == "EventsDelivered"
                        && c["status"] == "False"
                        && c["reason"] == "GaveUp"
                })
                && run["status"]["phase"] == "Succeeded"
                && run["status"]["finished"]["state"] == "GaveUp"
        })
    })
    .await;
    let run = &h.jobruns()[0];
    assert_eq!(run["status"]["started"]["state"], "GaveUp");
    assert_eq!(run["status"]["finished"]["state"], "GaveUp");
    assert!(
        run["status"]["finished"]["lastError"]
            .as_str()
            .unwrap()
            .starts_with("the sink refused the event: 400"),
        "{run}"
    );
    // Structured mode: the sink saw the whole event as JSON.
    let seen = h.sink.refused();
    assert!(
        seen.iter()
            .all(|r| r.headers["content-type"] == "application/cloudevents+json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_operator_gracefully() {
    let h = Harness::start(&[]).await;
    let exit = h.terminate_operator(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}\n{}", h.operator_log());
}

/// With a shutdown delay, a replica told to stop still answers events for that long, its
/// `/readyz` failing with why (the Service's endpoints drop it meanwhile), then stops on its
/// own; a second signal stops it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_told_to_stop_answers_events_for_the_shutdown_delay() {
    // `/readyz` once the signal is taken.
    async fn stopping(h: &Harness) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = h.get_admin("/readyz").await;
            if status == 503 && body.contains("this replica stops") {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "{status} {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let h = Harness::start(&["--shutdown-delay-seconds", "3"]).await;
    let told = std::time::Instant::now();
    h.signal_terminate();
    let body = stopping(&h).await;
    assert!(
        body.contains("this replica stops (a signal came): it answers events for 3s more"),
        "{body}"
    );
    let response = h
        .post_event(&sample_with_id("test.triggered.json", "drain-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    wait_for("the operator to stop on its own", LONG, || {
        !h.operator_running()
    })
    .await;
    assert!(
        told.elapsed() >= Duration::from_secs(3),
        "stopped after {:?}",
        told.elapsed()
    );
    assert!(h.operator_log().contains("shutting down"));

    let h = Harness::start(&["--shutdown-delay-seconds", "60"]).await;
    h.signal_terminate();
    stopping(&h).await;
    let exit = h.terminate_operator(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit:?}\n{}", h.operator_log());
}

/// SIGTERM with runs in flight, each in the middle of a task: the operator exits within its
/// grace period (10 s, plus a margin for a loaded machine), and a restart resumes every run,
/// each task's Job created once and every run reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_runs_in_flight_exits_in_time_and_a_restart_resumes_every_run() {
    let mut h = Harness::start(&[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("locustio/locust:*"), Behavior::hold());
    let ids = ["term-1", "term-2", "term-3"];
    for id in ids {
        let response = h
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
    }
    wait_for("every run's locust task to run", LONG, || {
        h.sim.runtime().held().len() == ids.len()
    })
    .await;
    let exit = h.terminate_operator(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit:?}\n{}", h.operator_log());
    // The tasks end while the operator is down: the restart must find that out.
    for (_, pod, _) in h.sim.runtime().held() {
        h.sim.release(&pod);
    }
    h.start_operator().await;
    for id in ids {
        let finished = h.wait_finished(id, LONG).await;
        assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    }
    assert_each_job_created_once(&h, 2 * ids.len());
}

/// Polls `/readyz` until its answer satisfies `done`, or fails after `timeout`.
async fn readyz_until(
    op: &support::Operator,
    timeout: Duration,
    done: impl Fn(&(http::StatusCode, String)) -> bool,
) -> (http::StatusCode, String) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let answer = op.get_admin("/readyz").await;
        if done(&answer) {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still answers {answer:?}\n{}",
            op.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An operator on a fresh kube-sim with nothing installed, reading `examples/` (not started).
async fn on_a_bare_sim(name: &str) -> (support::Operator, kube_sim::Sim) {
    let sim = kube_sim::Sim::builder().start().await.unwrap();
    let dir = support::fresh_dir(name);
    let kubeconfig = sim.write_kubeconfig(dir.join("kubeconfig")).unwrap();
    let config = support::root().join("examples");
    let source = vec![
        "--config-dir".to_string(),
        config.to_str().unwrap().to_string(),
    ];
    let op = support::Operator::new(dir, kubeconfig, "default", source, &[]).await;
    (op, sim)
}

/// `kubectl apply -f path` as the operator's user.
fn kubectl_apply(op: &support::Operator, path: &std::path::Path) {
    let applied = std::process::Command::new(support::kubectl())
        .args(["apply", "-f", path.to_str().unwrap()])
        .env("KUBECONFIG", &op.kubeconfig)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");
}

/// Upgraded without its CRD (Helm does not upgrade CRDs): the JobRun CRD of an older version
/// has no selectable `status.done`, the API server refuses the controller's watch, and
/// `/readyz` names the fix until the CRD is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_newer_than_its_crd_says_which_to_apply_and_waits_for_it() {
    let (mut op, _sim) = on_a_bare_sim("old-crd").await;
    let crd = support::root().join("crds/jobrun.yaml");
    let current = std::fs::read_to_string(&crd).unwrap();
    let older = current.replace("    selectableFields:\n    - jsonPath: .status.done\n", "");
    assert_ne!(older, current, "the CRD has the selectable field");
    let older_crd = op.dir.join("jobrun-older.yaml");
    std::fs::write(&older_crd, older).unwrap();
    kubectl_apply(&op, &older_crd);
    op.set_flag("--max-runs-in-flight", "100");
    op.spawn_operator().await;
    let fix = "jobruns.job-executor.dev is older than this operator";
    let readyz = readyz_until(&op, LONG, |(_, body)| body.contains(fix)).await;
    assert_eq!(readyz.0, 503);
    assert!(readyz.1.contains("kubectl apply -f crds/"), "{}", readyz.1);
    // The runs in flight are not listed: the bound cannot be kept, and an event reaching the
    // replica (its pod's address, a NATS stream) is refused for now.
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "old-crd"))
        .await;
    assert_eq!(response.status, 503, "{:?}", response.body);
    assert!(response.headers.contains_key("retry-after"));
    assert!(
        (response.body["error"].as_str().unwrap())
            .contains("has not listed the runs in flight yet"),
        "{:?}",
        response.body
    );
    kubectl_apply(&op, &crd);
    readyz_until(&op, LONG, |(status, _)| *status == 200).await;
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "old-crd"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    op.wait_finished("old-crd", LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_before_its_crd_it_says_so_waits_for_it_and_stops_on_sigterm() {
    let (mut op, sim) = on_a_bare_sim("no-crd").await;

    // Not ready, and every place says why and what to do.
    op.spawn_operator().await;
    let fix = "jobruns.job-executor.dev is not installed: kubectl apply -f crds/";
    let readyz = readyz_until(&op, LONG, |(_, body)| body.contains(fix)).await;
    assert_eq!(readyz.0, 503);
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "no-crd"))
        .await;
    assert_eq!(response.status, 503, "{:?}", response.body);
    assert!(response.headers.contains_key("retry-after"));
    assert!(
        response.body["error"].as_str().unwrap().contains(fix),
        "{:?}",
        response.body
    );
    // The controller's watch says it once, not at every retry; the leader election may say once
    // why it does not lead (whether its reason names the CRD depends on which looked first).
    let log = op.operator_log();
    assert_eq!(
        log.matches(&format!("{fix} (waiting for it) watch="))
            .count(),
        1,
        "logged once, not at every retry: {log}"
    );
    assert!(
        log.lines().filter(|line| line.contains(fix)).count() <= 2,
        "logged once by the watch and at most once by the leader election: {log}"
    );
    // The schedules' watch says what it misses, once, without holding up readiness.
    let schedules = "JobSchedules do not fire: the CustomResourceDefinition \
                     jobschedules.job-executor.dev is not installed";
    assert_eq!(
        op.operator_log().matches(schedules).count(),
        1,
        "{}",
        op.operator_log()
    );

    // SIGTERM ends it promptly in this state too.
    let exit = op.terminate_operator(Duration::from_secs(5)).await;
    assert!(exit.success(), "{exit:?}\n{}", op.operator_log());

    // Started again, it waits; once the CRD is there it becomes ready and accepts the event.
    op.spawn_operator().await;
    kubectl_apply(&op, &support::root().join("crds"));
    readyz_until(&op, LONG, |(status, _)| *status == 200).await;
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "no-crd"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    op.wait_finished("no-crd", LONG).await;

    // The CRD deleted under it: its watch ends, and the replica is not ready again, saying why.
    let crds: kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = kube::Api::all(sim.client());
    crds.delete("jobruns.job-executor.dev", &Default::default())
        .await
        .unwrap();
    let readyz = readyz_until(&op, LONG, |(_, body)| body.contains(fix)).await;
    assert_eq!(readyz.0, 503);
}

/// A job namespace that does not exist: the watches list it empty without a word and no run
/// can be stored, so the replica is not ready, saying why (the Lease, written there, finds it
/// out); once the namespace is made, it is ready and takes events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_namespace_that_does_not_exist_keeps_the_replica_unready() {
    let sim = kube_sim::Sim::builder().start().await.unwrap();
    let dir = support::fresh_dir("no-namespace");
    let kubeconfig = sim.write_kubeconfig(dir.join("kubeconfig")).unwrap();
    let config = support::root().join("examples");
    let source = vec![
        "--config-dir".to_string(),
        config.to_str().unwrap().to_string(),
    ];
    let mut op = support::Operator::new(dir, kubeconfig, "elsewhere", source, &[]).await;
    kubectl_apply(&op, &support::root().join("crds"));
    op.spawn_operator().await;
    let missing = "the job namespace does not exist";
    let readyz = readyz_until(&op, LONG, |(_, body)| body.contains(missing)).await;
    assert_eq!(readyz.0, 503, "{readyz:?}");
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(sim.client());
    let namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}
    }))
    .unwrap();
    namespaces
        .create(&Default::default(), &namespace)
        .await
        .unwrap();
    readyz_until(&op, LONG, |(status, _)| *status == 200).await;
    let response = op
        .post_event(&sample_with_id("test.triggered.json", "elsewhere"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_api_server_gets_503_within_the_store_timeout_and_turns_readiness_off() {
    let h = Harness::start(&["--store-timeout-seconds", "1"]).await;
    // Every request now takes 6 s: the API server hangs (watches included).
    h.sim.faults().latency(Duration::from_secs(6));
    let event = sample_with_id("test.triggered.json", "hang-1");
    let sent = std::time::Instant::now();
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 503, "{:?}", response.body);
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "answered after {:?}, not within the 1 s store timeout",
        sent.elapsed()
    );
    assert_eq!(response.headers["retry-after"], "5");
    assert!(
        response.body["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 1s"),
        "{:?}",
        response.body
    );
    // Readiness follows: the API server probe does not get an answer within 3 s.
    let readyz = readyz_until(&h, LONG, |(status, _)| *status == 503).await;
    assert!(readyz.1.contains("did not answer within 3s"), "{readyz:?}");
    h.sim.faults().latency(Duration::ZERO);
    readyz_until(&h, LONG, |(status, _)| *status == 200).await;
    // The sender's retry is accepted (created, or a duplicate when the late create landed),
    // and the run finishes once.
    let retry = h.post_event(&event).await;
    assert_eq!(retry.status, 202, "{:?}", retry.body);
    h.wait_finished("hang-1", LONG).await;
    assert_eq!(h.jobruns().len(), 1);
}

/// kube-sim and the operator with one action on the test event, whose task
/// (`held.example/task`) runs until released, and `extra_args`.
async fn held_task_harness(name: &str, extra_args: &[&str]) -> Harness {
    held_task_harness_with(name, "", extra_args).await
}

/// [`held_task_harness`], the action with `more` (YAML lines of the action's keys).
async fn held_task_harness_with(name: &str, more: &str, extra_args: &[&str]) -> Harness {
    let dir = support::fresh_dir(name);
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        format!(
            "apiVersion: v2\nactions:\n  - name: held\n    events: [{{name: sh.keptn.event.test.triggered}}]\n{more}    tasks: [{{image: held.example/task}}]\n"
        ),
    )
    .unwrap();
    let h = Harness::start_full(kube_sim::Sim::builder(), dir, extra_args).await;
    h.sim
        .runtime()
        .set(ImageRule::image("held.example/*"), Behavior::hold());
    h
}

/// Posts the event `id` until it is accepted, as a sender retries a 429, for up to `LONG`.
async fn post_until_accepted(h: &Harness, id: &str) {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let retry = h
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        if retry.status == 202 {
            return;
        }
        assert_eq!(retry.status, 429, "{:?}", retry.body);
        assert!(
            std::time::Instant::now() < deadline,
            "{id} still refused: {:?}",
            retry.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Backpressure: beyond `--max-runs-in-flight`, an event that would add runs gets 429 with
/// `Retry-After` and nothing of it is stored; a redelivery of an accepted event still passes;
/// once runs finish, the refused event is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_beyond_the_in_flight_bound_are_refused_until_some_finish() {
    let h = held_task_harness("backpressure", &["--max-runs-in-flight", "2"]).await;
    for id in ["bp-1", "bp-2"] {
        let response = h
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
    }
    wait_for("both tasks running", LONG, || {
        h.sim.runtime().held().len() == 2
    })
    .await;
    let refused = h
        .post_event(&sample_with_id("test.triggered.json", "bp-3"))
        .await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(refused.headers["retry-after"], "5");
    assert_eq!(
        refused.body["error"],
        "2 runs are in flight, the limit is 2 (--max-runs-in-flight): this event's 1 new \
         run(s) are not accepted now; retry later"
    );
    assert_eq!(
        h.jobruns().len(),
        2,
        "nothing of the refused event is stored"
    );
    // An event whose service's config cannot be used would add a run too (failed, its
    // `.finished` reporting the error): refused the same way.
    let config_dir = h
        .args
        .iter()
        .skip_while(|arg| *arg != "--config-dir")
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap();
    std::fs::create_dir_all(config_dir.join("orders/job")).unwrap();
    std::fs::write(
        config_dir.join("orders/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - events: [{name: sh.keptn.event.test.triggered}]\n    tasks: [{image: held.example/task, unknown: 1}]\n",
    )
    .unwrap();
    let mut orders = sample_with_id("test.triggered.json", "bp-orders");
    orders["data"]["service"] = serde_json::json!("orders");
    let refused = h.post_event(&orders).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(h.jobruns().len(), 2, "nothing of it is stored");
    // A redelivery adds no run: it passes.
    let again = h
        .post_event(&sample_with_id("test.triggered.json", "bp-1"))
        .await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    assert_eq!(again.body["events"][0]["runs"][0]["status"], "duplicate");
    let (_, metrics) = h.get_admin("/metrics").await;
    assert!(
        metrics.contains("job_executor_events_received_total{outcome=\"backpressure\"} 2"),
        "{metrics}"
    );
    // The runs finish; the sender's retry is accepted.
    for (_, target, _) in h.sim.runtime().held() {
        h.sim.release(&target);
    }
    h.wait_finished("bp-1", LONG).await;
    h.wait_finished("bp-2", LONG).await;
    post_until_accepted(&h, "bp-3").await;
}

/// A signed request answered 429 (retry later) does not spend its signature: the sender's
/// retry of the same bytes is taken once there is room (it was refused 401, "already used").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_answered_retry_later_may_be_sent_again() {
    use job_executor::ingest::auth::sign;
    let dir = support::fresh_dir("hmac-backpressure-secret");
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, "webhook-secret\n").unwrap();
    let secret = secret_file.to_str().unwrap();
    let h = held_task_harness(
        "hmac-backpressure",
        &[
            "--max-runs-in-flight",
            "1",
            "--ingest-hmac-secret-file",
            secret,
        ],
    )
    .await;
    let post_signed = |id: &str| {
        let body = sample_with_id("test.triggered.json", id).to_string();
        let now = support::unix_now();
        let signature = sign(b"webhook-secret", now, body.as_bytes());
        (body, now.to_string(), signature)
    };
    async fn send(
        h: &Harness,
        (body, at, signature): &(String, String, String),
    ) -> support::Response {
        h.post(
            &[
                ("content-type", "application/cloudevents+json"),
                ("x-signature-256", signature.as_str()),
                ("x-signature-timestamp", at.as_str()),
            ],
            body.clone(),
        )
        .await
    }
    let send = |request| send(&h, request);
    let first = post_signed("sig-bp-1");
    assert_eq!(send(&first).await.status, 202);
    wait_for("the task running", LONG, || {
        h.sim.runtime().held().len() == 1
    })
    .await;
    let second = post_signed("sig-bp-2");
    let refused = send(&second).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    let again = send(&second).await;
    assert_eq!(again.status, 429, "still full, not spent: {:?}", again.body);
    for (_, target, _) in h.sim.runtime().held() {
        h.sim.release(&target);
    }
    h.wait_finished("sig-bp-1", LONG).await;
    // The first run counts as in flight until its `.finished` is recorded: 429 meanwhile.
    let deadline = std::time::Instant::now() + LONG;
    let taken = loop {
        let answer = send(&second).await;
        if answer.status != 429 || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(taken.status, 202, "{:?}", taken.body);
    // Once taken, it is spent.
    assert_eq!(send(&second).await.status, 401);
}

/// A run that finished while the run watch was down, its history compacted meanwhile, left the
/// watch without a deletion event: the bound on runs in flight stops counting it once the watch
/// has listed the runs again (else every later event would be refused for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_finished_during_a_relist_no_longer_counts_as_in_flight() {
    let h = held_task_harness("bound-relist", &["--max-runs-in-flight", "1"]).await;
    assert_created(
        &h.post_event(&sample_with_id("test.triggered.json", "bound-1"))
            .await,
    );
    wait_for("the task to run", LONG, || {
        h.sim.runtime().held().len() == 1
    })
    .await;
    let refused = h
        .post_event(&sample_with_id("test.triggered.json", "bound-2"))
        .await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    // The run watch goes down, and stays down while the run finishes.
    h.fail_watches("jobruns");
    h.sim.release(&h.sim.runtime().held()[0].1);
    h.wait_finished("bound-1", LONG).await;
    wait_for("the delivery to be recorded", LONG, || {
        h.jobruns()[0]["status"]["finished"]["state"] == "Delivered"
    })
    .await;
    // Its history expired: the watch comes back by listing the runs, without this one.
    h.sim.runtime().clear();
    h.relist_watches();
    post_until_accepted(&h, "bound-2").await;
    h.wait_finished("bound-2", LONG).await;
}

/// The client-side limit: with `--kube-api-qps 5 --kube-api-burst 5`, the controller's requests
/// never pass 10 in any second (a full bucket and a second's refill) while every run completes
/// (with a limit of 500, the same runs sent 72 within a second here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_keeps_to_its_request_rate() {
    let h = Harness::start(&["--kube-api-qps", "5", "--kube-api-burst", "5"]).await;
    let mark = h.sim.requests().last().map_or(0, |r| r.seq);
    let ids: Vec<String> = (0..6).map(|i| format!("qps-{i}")).collect();
    for id in &ids {
        let response = h
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 202, "{:?}", response.body);
    }
    for id in &ids {
        let finished = h.wait_finished(id, Duration::from_secs(120)).await;
        assert_eq!(finished.data["status"], "succeeded");
    }
    // The controller's requests (the test's own and ingest's JobRun creates set aside).
    let sent: Vec<std::time::Instant> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.seq > mark && r.is_resource_request())
        .filter(|r| !(r.resource == "jobruns" && r.verb == "create"))
        .map(|r| r.received)
        .collect();
    assert!(sent.len() > 30, "{} requests", sent.len());
    let busiest = sent
        .iter()
        .map(|start| {
            sent.iter()
                .filter(|t| **t >= *start && **t < *start + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest <= 10, "{busiest} requests within one second");
}

/// A `429` with `Retry-After` from the API server is waited out before the step is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_request_waits_for_retry_after() {
    let h = Harness::start(&[]).await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(429)
            .verb("create")
            .resource("jobs")
            .times(1)
            .retry_after(3),
    );
    let response = h
        .post_event(&sample_with_id("test.triggered.json", "throttled-1"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    h.wait_finished("throttled-1", LONG).await;
    assert!(h.sim.faults().pending().is_empty(), "the 429 was answered");
    let creates: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.resource == "jobs" && r.verb == "create")
        .collect();
    assert_eq!(creates[0].status, 429);
    assert_eq!(creates[1].status, 201);
    let waited = creates[1].received - creates[0].received;
    assert!(waited >= Duration::from_secs(3), "retried after {waited:?}");
}

/// A `429` is tried again through the client's request limit: with two requests a second,
/// the try comes half a second after the refusal. (kube's own retry layer sits inside the
/// limit: it tried again within milliseconds, past the limit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_request_is_tried_again_through_the_request_limit() {
    let h = Harness::start(&["--kube-api-qps", "2", "--kube-api-burst", "1"]).await;
    h.sim.faults().fail_next(
        kube_sim::FaultRule::new(429)
            .verb("create")
            .resource("jobs")
            .times(1),
    );
    let response = h
        .post_event(&sample_with_id("test.triggered.json", "throttled-2"))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    h.wait_finished("throttled-2", LONG).await;
    let creates: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.resource == "jobs" && r.verb == "create")
        .collect();
    assert_eq!(creates[0].status, 429);
    let waited = creates[1].received - creates[0].received;
    assert!(
        waited >= Duration::from_millis(400),
        "tried again after {waited:?}"
    );
}

/// A config that loads with a warning (an event name written as Keptn's service's regular
/// expression, which as a glob matches nothing) has it said in the operator's log, with its
/// place in the file, once per content: the answer only says no action listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_s_warnings_are_in_the_operator_s_log() {
    let dir = support::fresh_dir("config-warnings");
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - name: regex\n    events:\n      - name: \"^sh\\\\.keptn\\\\.event\\\\.(test|evaluation)\\\\.triggered$\"\n    tasks: [{name: t, image: alpine}]\n",
    )
    .unwrap();
    let h = Harness::start_full(kube_sim::Sim::builder(), dir.clone(), &[]).await;
    for id in ["warned-1", "warned-2"] {
        let response = h
            .post_event(&sample_with_id("test.triggered.json", id))
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let log = h.operator_log();
    let warning = format!(
        "{}:5:15: actions[0].events[0].name: \"^sh\\.keptn\\.event\\.(test|evaluation)\\.triggered$\" \
         looks like a regular expression",
        dir.join("carts/job/config.yaml").display()
    );
    assert_eq!(log.matches(&warning).count(), 1, "{warning}\n{log}");
    assert!(h.jobruns().is_empty());
    // Started without a token or a signing secret: said once, at the start.
    let open = "events over HTTP are accepted from anyone who reaches the port: no \
                --ingest-token-file, --ingest-token or --ingest-hmac-secret-file is set";
    assert_eq!(log.matches(open).count(), 1, "{log}");
}
