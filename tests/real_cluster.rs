//! The operator end to end on a real control plane (`scripts/cluster`: kube-apiserver,
//! kube-controller-manager, kube-scheduler and etcd of Kubernetes 1.36, KWOK as the kubelet),
//! installed with the real Helm and kubectl, running under the installed ServiceAccount's token
//! so the real RBAC authorizer enforces the shipped Role, in namespaces that enforce the
//! `restricted` Pod Security Standard. Every test has its own namespace; tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::{ClusterHarness, cluster, path};
use support::git::GitRepo;
use support::{Reply, root, sample_with_id, wait_for};

const LONG: Duration = Duration::from_secs(60);

fn examples() -> PathBuf {
    root().join("examples")
}

/// A config directory with `carts/job/config.yaml` holding `config`.
fn config_dir(name: &str, config: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("je-cluster-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(dir.join("carts/job/config.yaml"), config).unwrap();
    dir
}

/// Two tasks on the test event: `first` then `second` (images).
fn two_tasks(name: &str, first: &str, second: &str, extra: &str) -> PathBuf {
    config_dir(
        name,
        &format!(
            "apiVersion: v2\nactions:\n  - name: two tasks\n    events: [{{name: sh.keptn.event.test.triggered}}]\n    tasks:\n      - name: first\n        image: {first}\n        args: [\"2\"]\n{extra}      - name: second\n        image: {second}\n        cmd: [echo, second]\n"
        ),
    )
}

fn message(finished: &support::Received) -> String {
    finished.data["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Posts `id`'s test event and holds its `.finished` at the sink until the run's tasks are
/// over and its files ConfigMap is read (a run is done once `.finished` is delivered, and its
/// ConfigMap deleted then, which is checked too): the ConfigMap as it was.
async fn hold_until_files_read(h: &ClusterHarness, id: &str) -> Value {
    h.sink
        .set_policy(|event| match event.event_type.ends_with(".finished") {
            true => Reply::Unavailable,
            false => Reply::Accept,
        });
    let event = sample_with_id("test.triggered.json", id);
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert_eq!(response.body["events"][0]["runs"][0]["status"], "created");
    h.eventually("the run's tasks to end", LONG, || {
        h.jobruns()
            .first()
            .is_some_and(|run| run["status"]["phase"] == "Succeeded")
    })
    .await;
    let run_name = h.jobruns()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let files = format!("{run_name}-files");
    let configmap = h
        .cluster
        .kubectl_json(&["-n", &h.namespace, "get", "configmap", &files]);
    h.sink.accept_all();
    h.eventually("the done run's files ConfigMap deleted", LONG, || {
        !h.list("configmaps")
            .iter()
            .any(|map| map["metadata"]["name"] == files.as_str())
    })
    .await;
    configmap
}

/// docs/operator.md's `kubectl wait --for=condition=…` for a run, which must be met at once.
fn wait_for_condition(h: &ClusterHarness, run_name: &str, condition: &str) {
    let waited = h.kubectl(&[
        "wait",
        &format!("--for=condition={condition}"),
        &format!("jobrun/{run_name}"),
        "--timeout=10s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_event_runs_both_tasks_in_order_with_their_logs_and_files() {
    let h = ClusterHarness::start("order", &examples(), &[]).await;
    let configmap = hold_until_files_read(&h, "cluster-order").await;
    let finished = h.wait_finished("cluster-order", LONG).await;
    let types: Vec<String> = h
        .sink
        .for_trigger("cluster-order")
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
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    assert_eq!(finished.data["result"], "pass");
    let message = message(&finished);
    let first = message
        .find("Task 'Check the service answers' finished")
        .expect(&message);
    let second = message
        .find("Task 'Run locust smoke tests' finished")
        .expect(&message);
    assert!(first < second, "{message}");
    // The log excerpts came through the API server from KWOK's kubelet endpoint: each test
    // image prints its command line, with $(VAR) expanded from the container's env.
    assert!(
        message.contains("/bin/sh /keptn/scripts/wait-for.sh"),
        "{message}"
    );
    assert!(
        message.contains("--host http://carts.sockshop-dev:80"),
        "{message}"
    );

    // Each task's Job created once, in order (the API server's audit log).
    let jobs = h.jobs_created();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(
        jobs[0].ends_with("-0") && jobs[1].ends_with("-1"),
        "{jobs:?}"
    );

    // The files reach the Job through the run's ConfigMap, mounted into the init container
    // (which KWOK does not run: the copy into /keptn is proven by stage-files' own tests).
    let run = &h.jobruns()[0];
    let run_name = run["metadata"]["name"].as_str().unwrap();
    let files = format!("{run_name}-files");
    let parsed: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(configmap.clone()).unwrap();
    let binary = parsed.binary_data.unwrap_or_default();
    let keys: Vec<&str> = binary.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "0-scripts_wait-for.sh",
            "1-locust_basic.py",
            "2-locust_locust.conf"
        ]
    );
    assert_eq!(
        binary["0-scripts_wait-for.sh"].0,
        std::fs::read(examples().join("carts/scripts/wait-for.sh")).unwrap()
    );
    assert_eq!(
        configmap["metadata"]["ownerReferences"][0]["name"], run_name,
        "the ConfigMap is owned by its run"
    );
    let job = h
        .cluster
        .kubectl_json(&["-n", &h.namespace, "get", "job", &jobs[0]]);
    let volumes = job["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains(&files), "{volumes}");
    assert_eq!(
        job["spec"]["template"]["spec"]["initContainers"][0]["args"][0],
        "stage-files"
    );

    assert_eq!(run["status"]["phase"], "Succeeded");
    h.eventually("the delivery to be recorded", LONG, || {
        h.jobruns()[0]["status"]["finished"]["state"] == "Delivered"
    })
    .await;

    // `kubectl get jobruns`: the CRD's printer columns, served by the real API server.
    let table = h.kubectl(&["get", "jobruns"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "ACTION", "SERVICE", "STAGE", "PHASE", "TASK", "TASKS", "AGE"
        ],
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with(run_name) && row.contains("Run locust") && row.contains("Succeeded"),
        "{table}"
    );
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells.windows(2).any(|w| w == ["carts", "dev"]), "{table}");
    assert!(
        row.contains("Check the service answers:Succeeded Run locust smoke tests:Succeeded"),
        "every task's state: {table}"
    );
    // `-o wide` adds the project and the event's type; the category lists runs and schedules.
    let wide = h.kubectl(&["get", "jobruns", "-o", "wide"]);
    let words = |line: usize| -> Vec<String> {
        let line = wide.lines().nth(line).unwrap_or_default();
        line.split_whitespace().map(str::to_string).collect()
    };
    assert!(
        words(0).ends_with(&["AGE", "PROJECT", "EVENT"].map(String::from)),
        "{wide}"
    );
    assert!(
        words(1).ends_with(&["sockshop", "sh.keptn.event.test.triggered"].map(String::from)),
        "{wide}"
    );
    // docs/operator.md's wait for a run's outcome.
    wait_for_condition(&h, run_name, "Succeeded");
    // A run's spec is fixed (the CRD's rule): an edit is refused, an annotation is not.
    let edited = h.cluster.kubectl_output(
        &h.cluster.admin_kubeconfig,
        &[
            "-n",
            &h.namespace,
            "patch",
            "jobrun",
            run_name,
            "--type=merge",
            "-p",
            r#"{"spec":{"action":{"name":"something else"}}}"#,
        ],
    );
    let refusal = String::from_utf8_lossy(&edited.stderr);
    assert!(
        !edited.status.success() && refusal.contains("a run's spec is fixed"),
        "{refusal}"
    );
    h.kubectl(&["annotate", "jobrun", run_name, "example.com/note=kept"]);
    let category = h.kubectl(&["get", "job-executor", "-o", "name"]);
    assert!(
        category.contains(&format!("jobrun.job-executor.dev/{run_name}")),
        "{category}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_stops_the_action_and_reports_its_logs() {
    let config = two_tasks(
        "fail",
        "job-executor.test/fail",
        "alpine:3.20",
        "        backoffLimit: 1\n",
    );
    let h = ClusterHarness::start("fail", &config, &[]).await;
    let event = sample_with_id("test.triggered.json", "cluster-fail");
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("cluster-fail", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    assert_eq!(finished.data["result"], "fail");
    let message = message(&finished);
    assert!(
        message.starts_with("Task 'first' failed: BackoffLimitExceeded"),
        "the real Job controller's reason, as kube-sim's: {message}"
    );
    assert!(
        message.contains("job-executor.test/fail: failing on purpose with exit code 1"),
        "{message}"
    );
    // How each of its two pods ended, after the Job's reason.
    assert_eq!(
        message
            .matches(": container task exited with code 1")
            .count(),
        2,
        "{message}"
    );
    assert!(!message.contains("Task 'second'"), "{message}");
    assert_eq!(
        h.jobs_created().len(),
        1,
        "the second task never gets a Job"
    );
    let run = &h.jobruns()[0];
    assert_eq!(run["status"]["phase"], "Failed");
    let run_name = run["metadata"]["name"].as_str().unwrap_or_default();
    // docs/operator.md's wait for a run that failed, and its list of the run's Events in order
    // (a list of tasks stopped by a failure skips the rest without an Event).
    wait_for_condition(&h, run_name, "Succeeded=False");
    let selector = format!("involvedObject.name={run_name}");
    let story = ["Accepted", "Started", "TaskStarted", "TaskFailed", "Failed"];
    let mut told = Vec::new();
    // Published in the background: the last may follow `.finished` by a moment.
    for _ in 0..50 {
        let events = h.kubectl(&[
            "get",
            "events",
            "--field-selector",
            &selector,
            "--sort-by=.eventTime",
        ]);
        // The column under the header's REASON (LAST SEEN is two words in the header).
        let column = events.lines().next().and_then(|h| h.find("REASON"));
        told = events
            .lines()
            .skip(1)
            .filter_map(|line| line.get(column?..)?.split_whitespace().next())
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if told.iter().any(|reason| reason == "Failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Deliveries (`Delivered`) come between, as they happen.
    let reasons: Vec<&str> = told
        .iter()
        .map(String::as_str)
        .filter(|r| *r != "Delivered")
        .collect();
    assert_eq!(reasons, story, "in order: {told:?}");
    // Its retry came once the first pod had stopped (the policy a task with retries gets).
    let job = &h.list("jobs")[0];
    assert_eq!(job["spec"]["podReplacementPolicy"], "Failed", "{job}");
    assert_eq!(job["status"]["failed"], 2, "{job}");
}

/// A Job the API server cannot store fails its task with the API server's reason and the run
/// ends: it is not retried for good. What the config and the event can make that the operator
/// does not check beforehand: a Job over etcd's 1.5 MiB (twenty variables of a 100 KB value from
/// the event, each one a process can be given, whose run, holding the event once, is stored). (An invalid Job, such as one with
/// 256 KiB of annotations, is refused when the config loads.) Kubernetes v1.36.3 answers such a
/// create with a 422 whose reason is not the size: the labels in it carry a `controller-uid`
/// other than the one it expects ("`selector` not auto-generated"), as if the create were
/// tried again, after etcd refused the object, with the object prepared the first time; a server
/// that says "request is too large" (a 500) or 413 is taken the same way (unit-tested).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_api_server_refuses_fails_the_run_with_its_reason() {
    let env: String = (0..20)
        .map(|i| format!("          - {{name: V{i}, valueFrom: event, value: $.data.padding}}\n"))
        .collect();
    let config = two_tasks(
        "refused",
        "alpine:3.20",
        "alpine:3.20",
        &format!("        env:\n{env}"),
    );
    let h = ClusterHarness::start("refused", &config, &[]).await;
    let mut event = sample_with_id("test.triggered.json", "cluster-refused");
    event["data"]["padding"] = serde_json::Value::String("x".repeat(100_000));
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let finished = h.wait_finished("cluster-refused", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    let message = message(&finished);
    assert!(
        message.starts_with("Task 'first' failed: the Kubernetes API refused the task's Job: ")
            && (message.contains("`selector` not auto-generated")
                || message.contains("request is too large")),
        "{message}"
    );
    assert!(!message.contains("Task 'second'"), "{message}");
    assert!(h.jobs_created().is_empty(), "no Job was made");
    assert_eq!(h.jobruns()[0]["status"]["phase"], "Failed");
}

/// A run larger than the API server stores (etcd's 1.5 MiB; an event may be larger where
/// `--max-body-bytes` allows it) is refused for good with the server's reason (422, no
/// `Retry-After`), not answered 503 for the sender to retry for ever; and stored failed in its
/// place, its event cut to the reply's fields, so that its `.finished` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_too_large_to_store_is_refused_for_good() {
    let h = ClusterHarness::start("too-large", &examples(), &["--max-body-bytes", "3000000"]).await;
    let mut event = sample_with_id("test.triggered.json", "cluster-too-large");
    event["data"]["padding"] = serde_json::Value::String("x".repeat(2_000_000));
    let response = h.post_event(&event).await;
    assert_eq!(response.status, 422, "{:?}", response.status);
    assert!(response.headers.get("retry-after").is_none());
    let runs = response.body["events"][0]["runs"]
        .as_array()
        .unwrap()
        .clone();
    for run in &runs {
        assert_eq!(run["status"], "refused");
        let reason = run["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("the Kubernetes API refuses to store the run: ")
                && reason.contains("too large"),
            "{reason}"
        );
    }
    let finished = h.wait_finished("cluster-too-large", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    assert!(
        message(&finished).contains("too large"),
        "{}",
        finished.data
    );
    assert_eq!(h.jobruns().len(), runs.len(), "each stored failed");
    assert!(h.jobs_created().is_empty());
}

/// The operator writes a run's status on the resourceVersion it decided on (a merge patch of
/// the status subresource carrying it): the API server refuses such a write once the run has
/// changed, as kube-sim does where `a_status_write_decided_on_an_older_record…` in
/// tests/operator.rs holds the operator's write until another writer has changed the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_write_on_an_older_version_of_a_run_is_refused() {
    let h = ClusterHarness::start("older-version", &examples(), &[]).await;
    let event = sample_with_id("test.triggered.json", "cluster-older-version");
    assert_eq!(h.post_event(&event).await.status, 202);
    h.wait_finished("cluster-older-version", LONG).await;
    // Once done, the operator writes the run no more.
    let deadline = std::time::Instant::now() + LONG;
    while h.jobruns()[0]["status"]["done"] != true {
        assert!(std::time::Instant::now() < deadline, "the run is not done");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = h.jobruns()[0].clone();
    let name = run["metadata"]["name"].as_str().unwrap();
    let version = run["metadata"]["resourceVersion"].as_str().unwrap();
    let write = |version: &str| {
        let patch = json!({
            "metadata": {"resourceVersion": version},
            "status": {"taskSummary": "written on a version"},
        });
        h.cluster.kubectl_output(
            &h.cluster.admin_kubeconfig,
            &[
                "-n",
                &h.namespace,
                "patch",
                "jobruns.job-executor.dev",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch.to_string(),
            ],
        )
    };
    h.kubectl(&[
        "annotate",
        "jobruns.job-executor.dev",
        name,
        "example.com/seen=yes",
    ]);
    let refused = write(version);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("the object has been modified"),
        "{said}"
    );
    let current = h.jobruns()[0]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(write(&current).status.success());
    assert_eq!(
        h.jobruns()[0]["status"]["taskSummary"],
        "written on a version"
    );
}

/// Applies `manifests` (written to `file`), waits until the API server refuses a Job saying
/// `why` (a quota or a policy is in force only once its controller or watch has it), then sends
/// the test event as `id`: what its `.finished` says.
async fn finished_under(
    h: &ClusterHarness,
    file: &Path,
    manifests: &str,
    why: &str,
    id: &str,
) -> String {
    std::fs::write(file, manifests).unwrap();
    h.cluster.kubectl(&["apply", "-f", path(file)]);
    h.eventually("the refusal to be in force", LONG, || denies_a_job(h, why))
        .await;
    let event = sample_with_id("test.triggered.json", id);
    assert_eq!(h.post_event(&event).await.status, 202);
    message(&h.wait_finished(id, LONG).await)
}

/// Whether the API server refuses a Job in the test's namespace (a dry run) saying `why`.
fn denies_a_job(h: &ClusterHarness, why: &str) -> bool {
    let job = h.cluster.kubectl_output(
        &h.cluster.admin_kubeconfig,
        &[
            "-n",
            &h.namespace,
            "create",
            "job",
            "probe",
            "--image=alpine:3.20",
            "--dry-run=server",
        ],
    );
    String::from_utf8_lossy(&job.stderr).contains(why)
}

/// A Job the namespace's ResourceQuota forbids (403, which someone may lift) is tried again
/// until the task has waited the never-started timeout (2 s here), then fails quoting the
/// quota; one a ValidatingAdmissionPolicy denies (403 too, but the same Job would be denied
/// again) fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_quota_or_an_admission_policy_forbids_fails_the_run_with_the_reason() {
    let config = two_tasks("forbidden", "alpine:3.20", "alpine:3.20", "");
    let h = ClusterHarness::start("forbidden", &config, &[]).await;
    let manifests = std::env::temp_dir().join(format!("je-forbidden-{}.yaml", h.namespace));
    let policy = format!("je-no-jobs-{}", h.namespace);
    let quota = finished_under(
        &h,
        &manifests,
        &format!(
            "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: no-jobs, namespace: {ns}}}\n\
             spec: {{hard: {{count/jobs.batch: \"0\"}}}}\n",
            ns = h.namespace
        ),
        "exceeded quota",
        "cluster-quota",
    )
    .await;
    assert!(
        quota.starts_with(
            "Task 'first' failed: the Kubernetes API refused to create the task's Job for 2s: "
        ) && quota.contains("is forbidden: exceeded quota: no-jobs"),
        "{quota}"
    );
    assert_eq!(h.sink.of_type(".started").len(), 1, ".started once");
    assert!(h.jobs_created().is_empty(), "no Job was made");
    h.kubectl(&["delete", "resourcequota", "no-jobs"]);

    // A policy that denies every Job of the namespace, as Forbidden.
    let denied = finished_under(
        &h,
        &manifests,
        &format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
             metadata: {{name: {policy}}}\nspec:\n  failurePolicy: Fail\n  matchConstraints:\n    \
             resourceRules:\n      - {{apiGroups: [batch], apiVersions: [v1], operations: [CREATE], \
             resources: [jobs]}}\n  validations:\n    - {{expression: \"false\", message: no Jobs \
             here, reason: Forbidden}}\n---\napiVersion: admissionregistration.k8s.io/v1\n\
             kind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: {policy}}}\nspec:\n  \
             policyName: {policy}\n  validationActions: [Deny]\n  matchResources:\n    \
             namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}\n",
            ns = h.namespace
        ),
        "denied request",
        "cluster-policy",
    )
    .await;
    h.cluster
        .kubectl(&["delete", "-f", path(&manifests), "--wait=false"]);
    assert!(
        denied.starts_with("Task 'first' failed: the Kubernetes API refused the task's Job: ")
            && denied.contains("denied request: no Jobs here"),
        "{denied}"
    );
    assert!(h.jobs_created().is_empty(), "no Job was made");
}

/// A Job whose pods the namespace's Pod Security level refuses makes no pod; the Job controller
/// says why only in an Event on the Job, which the failure quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_makes_no_pod_fails_the_run_with_the_job_controllers_warning() {
    let config = two_tasks(
        "nopod",
        "alpine:3.20",
        "alpine:3.20",
        "        securityContext: {runAsUser: 0, runAsNonRoot: false}\n",
    );
    let h = ClusterHarness::start("nopod", &config, &[]).await;
    let event = sample_with_id("test.triggered.json", "cluster-nopod");
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("cluster-nopod", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    let message = message(&finished);
    let job = h.jobs_created()[0].clone();
    assert!(
        message.starts_with(&format!(
            "Task 'first' failed: the Job {job} made no pod within 2s: FailedCreate: \
             Error creating: pods \"{job}-"
        )) && message.contains("is forbidden: violates PodSecurity \"restricted:latest\": ")
            && message.contains("runAsUser=0 (container \"task\" must not set runAsUser=0)"),
        "{message}"
    );
    assert!(!message.contains("Task 'second'"), "{message}");
    assert_eq!(h.jobs_created().len(), 1, "the second task never ran");
    h.eventually("the Job that made no pod to be deleted", LONG, || {
        !h.list("jobs")
            .iter()
            .any(|j| j["metadata"]["name"] == job.as_str())
    })
    .await;
}

/// A task past its `maxPollDuration` fails with the Job's `DeadlineExceeded` and, read while
/// the Job controller stops its pod, the logs of what it was doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_deadline_fails_with_its_logs() {
    let config = config_dir(
        "deadline",
        "apiVersion: v2\nactions:\n  - name: hangs\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n      - name: hung test\n        image: job-executor.test/sleep\n        args: [\"60\"]\n        maxPollDuration: 2\n",
    );
    let h = ClusterHarness::start("deadline", &config, &[]).await;
    let event = sample_with_id("test.triggered.json", "cluster-deadline");
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("cluster-deadline", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    let message = message(&finished);
    let job = h.jobs_created()[0].clone();
    assert!(
        message.starts_with(&format!(
            "Task 'hung test' failed: DeadlineExceeded: Job was active longer than specified \
             deadline\nLogs:\n[{job}-"
        )) && message.ends_with("/task]\n60"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_never_starts_fails_the_action_and_its_job_is_removed() {
    let config = two_tasks("stuck", "alpine:3.20", "job-executor.test/never-starts", "");
    let h = ClusterHarness::start("stuck", &config, &[]).await;
    let event = sample_with_id("test.triggered.json", "cluster-stuck");
    let sent = Instant::now();
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("cluster-stuck", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    let message = message(&finished);
    assert!(message.contains("Task 'first' finished"), "{message}");
    assert!(
        message.contains("Task 'second' failed: pod ")
            && message.contains("never started within 2s: ImagePullBackOff"),
        "{message}"
    );
    // 2 s never-started timeout, after a first task of about 1 s under KWOK.
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "{:?}",
        sent.elapsed()
    );
    let stuck = h.jobs_created()[1].clone();
    h.eventually("the stuck Job to be deleted", LONG, || {
        !h.list("jobs")
            .iter()
            .any(|j| j["metadata"]["name"] == stuck.as_str())
    })
    .await;
}

/// A task whose Job's deadline (`maxPollDuration`) passes before the never-started timeout,
/// while its pod waits with `ImagePullBackOff`, fails saying why the pod never started: the
/// Job controller marks the Job failing before its pods go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_while_the_pod_never_starts_says_why() {
    let config = config_dir(
        "deadline-stuck",
        "apiVersion: v2\nactions:\n  - name: stuck\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n      - {name: stuck, image: job-executor.test/never-starts, maxPollDuration: 3}\n",
    );
    let h = ClusterHarness::start(
        "deadline-stuck",
        &config,
        &["--never-started-timeout-seconds", "120"],
    )
    .await;
    let event = sample_with_id("test.triggered.json", "cluster-deadline-stuck");
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("cluster-deadline-stuck", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);
    let message = message(&finished);
    assert!(
        message.contains("DeadlineExceeded") && message.contains("never started: ImagePullBackOff"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_runs_once_sequentially_and_concurrently() {
    let h = ClusterHarness::start("dup", &examples(), &[]).await;
    let event = sample_with_id("test.triggered.json", "cluster-dup-1");
    let first = h.post_event(&event).await;
    let second = h.post_event(&event).await;
    assert_eq!(first.body["events"][0]["runs"][0]["status"], "created");
    assert_eq!(second.body["events"][0]["runs"][0]["status"], "duplicate");

    let concurrent = sample_with_id("test.triggered.json", "cluster-dup-2");
    let (a, b) = tokio::join!(h.post_event(&concurrent), h.post_event(&concurrent));
    let mut statuses = [
        a.body["events"][0]["runs"][0]["status"].to_string(),
        b.body["events"][0]["runs"][0]["status"].to_string(),
    ];
    statuses.sort();
    assert_eq!(statuses, ["\"created\"", "\"duplicate\""]);

    h.wait_finished("cluster-dup-1", LONG).await;
    h.wait_finished("cluster-dup-2", LONG).await;
    assert_eq!(h.jobruns().len(), 2);
    let jobs = h.jobs_created();
    assert_eq!(jobs.len(), 4, "each task's Job once per event: {jobs:?}");
    for id in ["cluster-dup-1", "cluster-dup-2"] {
        assert_eq!(
            h.sink.for_trigger(id).len(),
            2,
            "one .started, one .finished"
        );
    }
}

/// After each kind of crash: the run finishes, each Job was created once, `.finished` arrived.
fn assert_recovered(h: &ClusterHarness, id: &str, finished: &support::Received) {
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let jobs = h.jobs_created();
    let mut unique = jobs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((jobs.len(), unique.len()), (2, 2), "{jobs:?}");
    let events = h.sink.for_trigger(id);
    let started = events
        .iter()
        .position(|e| e.event_type.ends_with(".started"))
        .expect("a .started");
    let finished_at = events
        .iter()
        .position(|e| e.event_type.ends_with(".finished"))
        .unwrap();
    assert!(started < finished_at, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_each_step_loses_no_run_and_duplicates_no_job() {
    // The first task sleeps 2 s, so the operator can be killed while it runs.
    let config = two_tasks("kill", "job-executor.test/sleep", "alpine:3.20", "");
    let mut h = ClusterHarness::start("kill", &config, &[]).await;

    // Right after accepting.
    let event = sample_with_id("test.triggered.json", "cluster-kill-accept");
    assert_eq!(h.post_event(&event).await.status, 202);
    h.kill_operator();
    h.start_operator().await;
    let finished = h.wait_finished("cluster-kill-accept", LONG).await;
    assert_recovered(&h, "cluster-kill-accept", &finished);

    // While the first task runs.
    let before = h.jobs_created().len();
    let event = sample_with_id("test.triggered.json", "cluster-kill-running");
    assert_eq!(h.post_event(&event).await.status, 202);
    h.eventually("the first task's Job", LONG, || {
        h.jobs_created().len() > before
    })
    .await;
    h.kill_operator();
    h.start_operator().await;
    let finished = h.wait_finished("cluster-kill-running", LONG).await;
    assert_eq!(finished.data["status"], "succeeded");
    assert_eq!(h.jobs_created().len(), before + 2, "{:?}", h.jobs_created());

    // After `.finished` reached the sink, before the operator recorded it.
    let before = h.jobs_created().len();
    let mut killed = false;
    h.sink.set_policy(move |e| {
        if e.event_type.ends_with(".finished") && !killed {
            killed = true;
            Reply::KillOperator
        } else {
            Reply::Accept
        }
    });
    let event = sample_with_id("test.triggered.json", "cluster-kill-finished");
    assert_eq!(h.post_event(&event).await.status, 202);
    h.eventually("the operator to be killed", LONG, || !h.operator_running())
        .await;
    h.start_operator().await;
    h.eventually("the repeated .finished", LONG, || {
        h.sink
            .for_trigger("cluster-kill-finished")
            .iter()
            .filter(|e| e.event_type.ends_with(".finished"))
            .count()
            == 2
    })
    .await;
    let finished: Vec<_> = h
        .sink
        .for_trigger("cluster-kill-finished")
        .into_iter()
        .filter(|e| e.event_type.ends_with(".finished"))
        .collect();
    assert_eq!(finished[0].id, finished[1].id, "re-sent with the same id");
    assert_eq!(h.jobs_created().len(), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_expire_by_ttl_and_deleting_a_run_collects_its_objects() {
    let config = config_dir(
        "ttl",
        "apiVersion: v2\nactions:\n  - name: ttl\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n      - name: expires\n        image: alpine:3.20\n        ttlSecondsAfterFinished: 1\n      - name: stays\n        image: alpine:3.20\n        files: [notes.txt]\n        ttlSecondsAfterFinished: 3600\n",
    );
    std::fs::write(config.join("carts/notes.txt"), "kept with the run\n").unwrap();
    let h = ClusterHarness::start("ttl", &config, &[]).await;
    let event = sample_with_id("test.triggered.json", "cluster-ttl");
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("cluster-ttl", LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let jobs = h.jobs_created();
    let job_names = |h: &ClusterHarness| -> Vec<String> {
        h.list("jobs")
            .iter()
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    // The real TTL-after-finished controller deletes the first Job; the JobRun keeps the record.
    h.eventually("the TTL controller to delete the first Job", LONG, || {
        !job_names(&h).contains(&jobs[0])
    })
    .await;
    assert!(job_names(&h).contains(&jobs[1]));
    let run = &h.jobruns()[0];
    assert_eq!(run["status"]["phase"], "Succeeded");
    let run_name = run["metadata"]["name"].as_str().unwrap().to_string();

    // Deleting the JobRun: the real garbage collector removes its Job and ConfigMap.
    h.kubectl(&["delete", "jobrun", &run_name]);
    h.eventually(
        "the garbage collector to delete the run's objects",
        LONG,
        || {
            job_names(&h).is_empty()
                && !h
                    .list("configmaps")
                    .iter()
                    .any(|c| c["metadata"]["name"] == format!("{run_name}-files").as_str())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_rolls_out_the_operator_on_a_restricted_namespace() {
    let cluster = cluster();
    let namespace = format!("je-helm-{}", std::process::id() % 100_000);
    cluster.restricted_namespace(&namespace);
    let chart = root().join("charts/job-executor");
    cluster.helm(&[
        "install",
        "job-executor",
        path(&chart),
        "--namespace",
        &namespace,
    ]);
    cluster.rollout_status(&namespace);
    let pods = cluster.kubectl_json(&["-n", &namespace, "get", "pods"]);
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    assert_eq!(pod["spec"]["nodeName"], "kwok-node-0");

    // An upgrade keeps the generated token senders already use (the chart's `lookup`), and a
    // changed value reaches the operator.
    let token = || {
        let secret =
            cluster.kubectl_json(&["-n", &namespace, "get", "secret", "job-executor-ingest"]);
        secret["data"]["token"].as_str().unwrap().to_string()
    };
    let generated = token();
    assert_eq!(generated.len(), 56, "40 characters, base64: {generated}");
    cluster.helm(&[
        "upgrade",
        "job-executor",
        path(&chart),
        "--namespace",
        &namespace,
        "--set",
        "logLevel=debug",
    ]);
    assert_eq!(token(), generated);
    let settings = cluster.kubectl_json(&["-n", &namespace, "get", "configmap", "job-executor"]);
    assert_eq!(settings["data"]["RUST_LOG"], "debug", "{settings}");
    cluster.rollout_status(&namespace);
    // The token's key renamed: the same token, under the new key.
    cluster.helm(&[
        "upgrade",
        "job-executor",
        path(&chart),
        "--namespace",
        &namespace,
        "--reuse-values",
        "--set",
        "ingest.token.key=bearer",
    ]);
    let secret = cluster.kubectl_json(&["-n", &namespace, "get", "secret", "job-executor-ingest"]);
    assert_eq!(secret["data"], json!({ "bearer": generated }), "{secret}");
    cluster.rollout_status(&namespace);

    cluster.helm(&[
        "uninstall",
        "job-executor",
        "--namespace",
        &namespace,
        "--wait",
    ]);
    cluster.kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}

/// The guide's install (docs/install.md), word for word, then the operator under the shipped
/// Role: it may use what the Role grants and nothing else, and uses all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubectl_install_runs_the_test_event_under_the_shipped_role() {
    let cluster = cluster();
    let namespace = "job-executor".to_string();
    let dir = std::env::temp_dir().join(format!("je-cluster-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _ = cluster.kubectl_output(
        &cluster.admin_kubeconfig,
        &[
            "delete",
            "namespace",
            &namespace,
            "--wait=true",
            "--timeout=60s",
        ],
    );
    cluster.kubectl(&["create", "namespace", &namespace]);
    cluster.kubectl(&[
        "-n",
        &namespace,
        "create",
        "secret",
        "generic",
        "job-executor",
        "--from-literal=ingest-token=test-token",
        "--from-literal=sink-headers=x-token: keptn-api-token",
    ]);
    cluster.kubectl(&[
        "apply",
        "-f",
        path(&root().join("crds")),
        "-f",
        path(&root().join("deploy/service.yaml")),
    ]);
    cluster.rollout_status(&namespace);
    let labels = cluster.kubectl_json(&["get", "namespace", &namespace]);
    assert_eq!(
        labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
        "the shipped namespace enforces the restricted Pod Security Standard"
    );
    people_bound_to_view_and_edit_reach_runs_and_schedules(cluster, &namespace).await;
    let kubeconfig =
        cluster.service_account_kubeconfig(&namespace, "job-executor", &dir.join("sa.kubeconfig"));
    // The example configs, plus an action whose pod never starts: deleting its stuck Job is
    // the rest of what the Role grants.
    let configs = dir.join("configs");
    copy_dir(&examples(), &configs);
    let mut config = std::fs::read_to_string(configs.join("carts/job/config.yaml")).unwrap();
    config.push_str(
        "  - name: \"Never starts\"\n    events: [{name: sh.keptn.event.evaluation.triggered}]\n    tasks:\n      - name: stuck\n        image: job-executor.test/never-starts\n",
    );
    std::fs::write(configs.join("carts/job/config.yaml"), config).unwrap();
    let h = ClusterHarness::with_install(cluster, namespace, dir, kubeconfig, &configs, &[]).await;
    let event = sample_with_id("test.triggered.json", "cluster-install");
    assert_eq!(h.post_event(&event).await.status, 202);
    let stuck = sample_with_id("evaluation.triggered.json", "cluster-install-stuck");
    assert_eq!(h.post_event(&stuck).await.status, 202);
    let finished = h.wait_finished("cluster-install", LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let finished = h.wait_finished("cluster-install-stuck", LONG).await;
    assert_eq!(finished.data["status"], "errored", "{}", finished.data);

    let denied: Vec<Value> = h
        .requests()
        .into_iter()
        .filter(|r| r["responseStatus"]["code"] == 403)
        .collect();
    assert!(denied.is_empty(), "the shipped Role lacks: {denied:?}");
    let (public, used): (BTreeSet<_>, BTreeSet<_>) = h
        .permissions_used()
        .into_iter()
        .partition(|(_, resource)| resource.starts_with('/'));
    // The API server probe behind /readyz: every authenticated identity may read the version
    // (the built-in system:public-info-viewer ClusterRole), so the Role needs nothing for it.
    assert_eq!(
        public,
        BTreeSet::from([("get".to_string(), "/version".to_string())])
    );
    let role = h
        .cluster
        .kubectl_json(&["-n", &h.namespace, "get", "role", "job-executor"]);
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for resource in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                granted.insert((
                    verb.as_str().unwrap().to_string(),
                    resource.as_str().unwrap().to_string(),
                ));
            }
        }
    }
    let unused: Vec<_> = granted.difference(&used).collect();
    let ungranted: Vec<_> = used.difference(&granted).collect();
    assert!(ungranted.is_empty(), "used but not granted: {ungranted:?}");
    println!("granted but not used in this scenario: {unused:?}");
}

/// The shipped ClusterRoles add JobRuns and JobSchedules to the built-in `view` and `edit`
/// (docs/install.md, Permissions): what the API server lets someone bound to each do, once the
/// aggregation controller has folded them in.
async fn people_bound_to_view_and_edit_reach_runs_and_schedules(
    cluster: &support::cluster::Cluster,
    namespace: &str,
) {
    for role in ["view", "edit"] {
        cluster.kubectl(&[
            "-n",
            namespace,
            "create",
            "rolebinding",
            &format!("people-{role}"),
            &format!("--clusterrole={role}"),
            &format!("--serviceaccount={namespace}:{role}er"),
        ]);
    }
    let may = |who: &str, verb: &str, resource: &str| {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let output = cluster.kubectl_output(
            &cluster.admin_kubeconfig,
            &[
                "auth",
                "can-i",
                verb,
                &format!("{resource}.job-executor.dev"),
                &format!("--subresource={subresource}"),
                "-n",
                namespace,
                &format!("--as=system:serviceaccount:{namespace}:{who}"),
            ],
        );
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    wait_for("the aggregated rules in view and edit", LONG, || {
        may("viewer", "list", "jobruns") && may("editer", "create", "jobschedules")
    })
    .await;
    for (who, verb, resource, allowed) in [
        ("viewer", "get", "jobruns", true),
        ("viewer", "watch", "jobschedules", true),
        ("viewer", "patch", "jobruns", false),
        ("viewer", "create", "jobschedules", false),
        ("editer", "patch", "jobruns", true),
        ("editer", "delete", "jobruns", true),
        ("editer", "delete", "jobschedules", true),
        ("editer", "create", "jobruns", false),
        ("editer", "patch", "jobruns/status", false),
    ] {
        assert_eq!(may(who, verb, resource), allowed, "{who} {verb} {resource}");
    }
}

/// The production source on the real control plane: the example config and its files committed
/// to the `dev` branch of a git repository (read over `file://`), cloned by the operator. The run
/// records the commit, and its files come from that commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_event_runs_from_a_git_repository() {
    let root = std::env::temp_dir().join(format!("je-cluster-git-{}", std::process::id()));
    let repo = GitRepo::new(root.join("configs"));
    repo.write("README.md", "the project's configs\n");
    repo.commit("the project");
    repo.switch("dev");
    copy_dir(&examples().join("carts"), &repo.dir.join("carts"));
    repo.write("carts/scripts/wait-for.sh", "echo from the dev branch\n");
    let dev = repo.commit("carts on dev");
    let source = vec![
        "--git-url".to_string(),
        repo.file_url(),
        "--git-cache-dir".to_string(),
        path(&root.join("cache")).to_string(),
    ];
    let h = ClusterHarness::start_from("git", source, &[]).await;
    let configmap = hold_until_files_read(&h, "cluster-git").await;
    let finished = h.wait_finished("cluster-git", LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    assert_eq!(h.jobs_created().len(), 2);

    let run = &h.jobruns()[0];
    assert_eq!(run["spec"]["configRevision"], dev.as_str());
    assert_eq!(run["spec"]["configDir"], "carts");
    let configmap: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(configmap).unwrap();
    let binary = configmap.binary_data.unwrap_or_default();
    assert_eq!(
        binary["0-scripts_wait-for.sh"].0, b"echo from the dev branch\n",
        "the file as committed, not as in examples/"
    );
    let _ = std::fs::remove_dir_all(&root);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The API server of the tests runs OwnerReferencesPermissionEnforcement, which demands
/// `update` on the owner's `finalizers` for an owner reference with `blockOwnerDeletion`. The
/// operator sets none, so its Jobs and ConfigMaps need no such permission: the shipped Role does
/// not grant it, and the run succeeds (which the audit log confirms, create by create).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_references_need_no_update_on_jobrun_finalizers() {
    let h = ClusterHarness::start("finalizers", &examples(), &[]).await;
    let role = h
        .cluster
        .kubectl_json(&["-n", &h.namespace, "get", "role", "job-executor"]);
    assert!(
        !role["rules"].to_string().contains("finalizers"),
        "{}",
        role["rules"]
    );
    let event = sample_with_id("test.triggered.json", "cluster-finalizers");
    assert_eq!(h.post_event(&event).await.status, 202);
    let finished = h.wait_finished("cluster-finalizers", LONG).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let creates: Vec<_> = h
        .requests()
        .into_iter()
        .filter(|r| r["verb"] == "create")
        .map(|r| {
            (
                r["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["responseStatus"]["code"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        creates.contains(&("configmaps".to_string(), 201)),
        "{creates:?}"
    );
    assert!(creates.iter().all(|(_, code)| *code == 201), "{creates:?}");
    // Once the run is done, its files ConfigMap goes (the shipped Role may delete it).
    support::wait_patiently("the files ConfigMap deleted", LONG, || {
        h.list("configmaps").iter().all(|map| {
            !map["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .ends_with("-files")
        })
    })
    .await;
    for job in h.list("jobs") {
        let owner = &job["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "JobRun");
        assert!(owner["blockOwnerDeletion"].is_null(), "{owner}");
    }
}
