#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The simulated Job controller and kubelet: lifecycle, retries, deadline, TTL, never-starts,
//! suspend, env/volumes seen by containers, logs.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, LogParams, Patch, PatchParams, PostParams};
use kube_sim::{Behavior, ImageRule, Outcome, Sim, SimBuilder, wait_until, wait_until_async};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

fn job(name: &str, spec: Value) -> Job {
    let mut s = json!({"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36", "command": ["echo", "hello"]}]}}});
    merge(&mut s, &spec);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": s})).unwrap()
}

fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn condition_types(j: &Value) -> Vec<String> {
    j["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|c| c["status"] == "True")
        .map(|c| c["type"].as_str().unwrap().to_string())
        .collect()
}

fn job_obj(sim: &Sim, name: &str) -> Value {
    sim.get_object("batch", "jobs", "default", name)
        .unwrap_or(Value::Null)
}

fn has_cond(sim: &Sim, name: &str, t: &str) -> bool {
    condition_types(&job_obj(sim, name)).iter().any(|c| c == t)
}

fn job_pods(sim: &Sim, name: &str) -> Vec<Value> {
    sim.list_objects("", "pods", Some("default"))
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["job-name"] == name)
        .collect()
}

#[tokio::test]
async fn successful_job_like_batch_v1() {
    let sim = Sim::start().await.unwrap();
    let jobs: Api<Job> = Api::default_namespaced(sim.client());
    let created = jobs
        .create(&PostParams::default(), &job("ok", json!({})))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(6));
    assert_eq!(spec.completions, Some(1));
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );
    wait_until(|| has_cond(&sim, "ok", "Complete"), T)
        .await
        .unwrap();
    let j = job_obj(&sim, "ok");
    assert_eq!(condition_types(&j), ["SuccessCriteriaMet", "Complete"]);
    assert_eq!(j["status"]["succeeded"], 1);
    assert!(j["status"].get("active").is_none() && j["status"].get("failed").is_none());
    assert_eq!(j["status"]["ready"], 0);
    assert!(j["status"]["startTime"].is_string() && j["status"]["completionTime"].is_string());
    let c = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Complete")
        .unwrap()
        .clone();
    assert_eq!(
        (c["reason"].as_str(), c["message"].as_str()),
        (
            Some("CompletionsReached"),
            Some("Reached expected number of succeeded pods")
        )
    );

    let pods = job_pods(&sim, "ok");
    assert_eq!(pods.len(), 1);
    let pod: Pod = serde_json::from_value(pods[0].clone()).unwrap();
    let name = pod.metadata.name.clone().unwrap();
    assert!(name.starts_with("ok-") && name.len() == 8, "{name}");
    let labels = pod.metadata.labels.clone().unwrap();
    for (k, v) in [
        ("job-name", "ok"),
        ("batch.kubernetes.io/job-name", "ok"),
        ("controller-uid", uid.as_str()),
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
    ] {
        assert_eq!(labels[k], v);
    }
    let owner = &pod.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Job", uid.as_str(), Some(true))
    );
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let t = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));

    // Default behaviour prints the command line.
    let pods_api: Api<Pod> = Api::default_namespaced(sim.client());
    assert_eq!(
        pods_api.logs(&name, &LogParams::default()).await.unwrap(),
        "echo hello\n"
    );
    let runs = sim.pod_runs("ok");
    assert_eq!(
        (
            runs.len(),
            runs[0].exit_code,
            runs[0].run.command_line().as_str()
        ),
        (1, Some(0), "echo hello")
    );
}

#[tokio::test]
async fn failure_with_retries_hits_backoff_limit() {
    let sim = SimBuilder::default()
        .time_scale(1000.0)
        .start()
        .await
        .unwrap();
    sim.runtime().set(
        ImageRule::image("busybox:*").command_contains("fail"),
        Behavior::exit(3).output(["boom"]),
    );
    let jobs: Api<Job> = Api::default_namespaced(sim.client());
    let spec = json!({"backoffLimit": 2, "template": {"spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "fail"]}]}}});
    jobs.create(&PostParams::default(), &job("bad", spec))
        .await
        .unwrap();
    wait_until(|| has_cond(&sim, "bad", "Failed"), T)
        .await
        .unwrap();
    let j = job_obj(&sim, "bad");
    assert_eq!(condition_types(&j), ["FailureTarget", "Failed"]);
    assert_eq!(
        j["status"]["failed"], 3,
        "one pod per try: backoffLimit + 1"
    );
    let failed = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert!(j["status"].get("completionTime").is_none());
    let pods = job_pods(&sim, "bad");
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            3
        );
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Error"
        );
    }
}

#[tokio::test]
async fn deadline_ttl_never_starts_and_suspend() {
    let sim = SimBuilder::default()
        .time_scale(100.0)
        .start()
        .await
        .unwrap();
    let jobs: Api<Job> = Api::default_namespaced(sim.client());
    sim.runtime()
        .set(ImageRule::image("slow"), Behavior::hold());
    sim.runtime().set(
        ImageRule::image("ghost:*"),
        Behavior::never_starts("ImagePullBackOff"),
    );
    let img =
        |i: &str| json!({"template": {"spec": {"containers": [{"name": "main", "image": i}]}}});

    // activeDeadlineSeconds (10 simulated seconds = 100 ms): running pods are removed.
    let mut s = img("slow");
    s["activeDeadlineSeconds"] = json!(10);
    jobs.create(&PostParams::default(), &job("late", s))
        .await
        .unwrap();
    wait_until(|| has_cond(&sim, "late", "Failed"), T)
        .await
        .unwrap();
    let j = job_obj(&sim, "late");
    assert_eq!(j["status"]["conditions"][0]["reason"], "DeadlineExceeded");
    wait_until(|| job_pods(&sim, "late").is_empty(), T)
        .await
        .unwrap();

    // Never starts: the pod stays Pending with the waiting reason; logs say so.
    jobs.create(&PostParams::default(), &job("pull", img("ghost:1")))
        .await
        .unwrap();
    wait_until(
        || {
            job_pods(&sim, "pull").first().is_some_and(|p| {
                p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                    == "ImagePullBackOff"
            })
        },
        T,
    )
    .await
    .unwrap();
    let pod = job_pods(&sim, "pull").remove(0);
    assert_eq!(pod["status"]["phase"], "Pending");
    let pods: Api<Pod> = Api::default_namespaced(sim.client());
    let name = pod["metadata"]["name"].as_str().unwrap();
    let e = pods.logs(name, &LogParams::default()).await.unwrap_err();
    match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 400);
            assert_eq!(
                s.message,
                format!(
                    "container \"main\" in pod \"{name}\" is waiting to start: trying and failing to pull image"
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(job_obj(&sim, "pull")["status"]["active"], 1);

    // ttlSecondsAfterFinished: the Job and its pods are deleted after the TTL.
    let mut s = img("quick");
    s["ttlSecondsAfterFinished"] = json!(5);
    jobs.create(&PostParams::default(), &job("ttl", s))
        .await
        .unwrap();
    wait_until(|| has_cond(&sim, "ttl", "Complete"), T)
        .await
        .unwrap();
    wait_until(
        || sim.get_object("batch", "jobs", "default", "ttl").is_none(),
        T,
    )
    .await
    .unwrap();
    wait_until(|| job_pods(&sim, "ttl").is_empty(), T)
        .await
        .unwrap();

    // suspend: no pods while suspended; resuming runs it.
    let mut s = img("quick");
    s["suspend"] = json!(true);
    jobs.create(&PostParams::default(), &job("sus", s))
        .await
        .unwrap();
    wait_until(|| has_cond(&sim, "sus", "Suspended"), T)
        .await
        .unwrap();
    assert!(job_pods(&sim, "sus").is_empty());
    assert!(job_obj(&sim, "sus")["status"].get("startTime").is_none());
    jobs.patch(
        "sus",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    wait_until(|| has_cond(&sim, "sus", "Complete"), T)
        .await
        .unwrap();
    let conds = job_obj(&sim, "sus")["status"]["conditions"].clone();
    let sus = conds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .unwrap()
        .clone();
    assert_eq!(
        (sus["status"].as_str(), sus["reason"].as_str()),
        (Some("False"), Some("JobResumed"))
    );
}

#[tokio::test]
async fn containers_see_env_and_volumes() {
    let sim = Sim::start().await.unwrap();
    let client = sim.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "files"},
            "data": {"a.txt": "alpha", "run.sh": "#!/bin/sh\necho hi"},
            "binaryData": {"bin": "AAEC"}
        }))
        .unwrap(),
    )
    .await
    .unwrap();

    // The init container copies the mounted ConfigMap into the emptyDir, like stage-files.
    sim.runtime().set(
        ImageRule::image("stager:*"),
        Behavior::run(|ctx| {
            let src = ctx.host_path("/src").unwrap();
            let dst = ctx.host_path("/keptn").unwrap();
            for e in walk(&src) {
                let rel = e.strip_prefix(&src).unwrap();
                let to = dst.join(rel);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&e, &to).unwrap();
            }
            Outcome::success().output(["staged"])
        }),
    );
    sim.runtime().set(
        ImageRule::image("task:*"),
        Behavior::run(|ctx| {
            let token = ctx.env_var("TOKEN").unwrap_or("-").to_string();
            Outcome::exit(0).output([format!(
                "token={token} job={}",
                ctx.env_var("JOB").unwrap_or("-")
            )])
        }),
    );
    let spec = json!({"template": {"spec": {
        "volumes": [
            {"name": "cm", "configMap": {"name": "files", "items": [{"key": "a.txt", "path": "dir/a.txt"}, {"key": "run.sh", "path": "run.sh", "mode": 0o755}, {"key": "bin", "path": "bin"}]}},
            {"name": "work", "emptyDir": {}}
        ],
        "initContainers": [{"name": "init", "image": "stager:1", "volumeMounts": [{"name": "cm", "mountPath": "/src", "readOnly": true}, {"name": "work", "mountPath": "/keptn"}]}],
        "containers": [{"name": "main", "image": "task:1", "command": ["run", "$(JOB)"], "workingDir": "/keptn",
            "env": [
                {"name": "JOB", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['job-name']"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "PLAIN", "value": "x-$(JOB)"}
            ],
            "volumeMounts": [{"name": "work", "mountPath": "/keptn"}]}]
    }}});
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(&PostParams::default(), &job("env", spec))
        .await
        .unwrap();
    // The Secret is missing: the container waits with CreateContainerConfigError.
    wait_until(
        || {
            job_pods(&sim, "env").first().is_some_and(|p| {
                p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                    == "CreateContainerConfigError"
            })
        },
        T,
    )
    .await
    .unwrap();
    let msg =
        job_pods(&sim, "env")[0]["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .clone();
    assert_eq!(msg, "secret \"creds\" not found");
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    wait_until(|| has_cond(&sim, "env", "Complete"), T)
        .await
        .unwrap();

    let runs = sim.pod_runs("env");
    let init = runs.iter().find(|r| r.run.init).unwrap();
    let main = runs.iter().find(|r| !r.run.init).unwrap();
    assert_eq!(init.files["/src/dir/a.txt"].text(), "alpha");
    assert_eq!(init.files["/src/run.sh"].mode, 0o755);
    assert_eq!(init.files["/src/dir/a.txt"].mode, 0o644);
    assert_eq!(init.files["/src/bin"].content, vec![0, 1, 2]);
    assert_eq!(main.files["/keptn/dir/a.txt"].text(), "alpha");
    assert_eq!(main.files["/keptn/run.sh"].mode, 0o755);
    assert_eq!(main.run.env_var("TOKEN"), Some("s3cr3t"));
    assert_eq!(main.run.env_var("JOB"), Some("env"));
    assert_eq!(main.run.env_var("PLAIN"), Some("x-env"));
    assert!(main.run.env_var("POD").unwrap().starts_with("env-"));
    assert_eq!(main.run.command, ["run", "env"]);
    assert_eq!(main.run.working_dir.as_deref(), Some("/keptn"));
    assert_eq!(main.output, ["token=s3cr3t job=env"]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn pod_logs_options_and_errors() {
    let sim = SimBuilder::default()
        .time_scale(1000.0)
        .start()
        .await
        .unwrap();
    let lines: Vec<String> = (1..=5).map(|i| format!("line {i}")).collect();
    sim.runtime().set(
        ImageRule::image("printer"),
        Behavior::succeed().output(lines.clone()),
    );
    sim.runtime()
        .set(ImageRule::image("flaky"), Behavior::exit(1).output(["try"]));
    let pods: Api<Pod> = Api::default_namespaced(sim.client());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "OnFailure", "initContainers": [{"name": "init", "image": "printer"}], "containers": [{"name": "a", "image": "printer"}, {"name": "b", "image": "flaky"}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_until(
        || {
            sim.get_object("", "pods", "default", "p").is_some_and(|p| {
                p["status"]["containerStatuses"][1]["restartCount"].as_i64() >= Some(1)
            })
        },
        T,
    )
    .await
    .unwrap();
    let lp = |c: &str| LogParams {
        container: Some(c.into()),
        ..Default::default()
    };
    assert_eq!(
        pods.logs("p", &lp("a")).await.unwrap(),
        "line 1\nline 2\nline 3\nline 4\nline 5\n"
    );
    assert_eq!(
        pods.logs("p", &lp("init")).await.unwrap().lines().count(),
        5
    );
    assert_eq!(
        pods.logs(
            "p",
            &LogParams {
                tail_lines: Some(2),
                ..lp("a")
            }
        )
        .await
        .unwrap(),
        "line 4\nline 5\n"
    );
    assert_eq!(
        pods.logs(
            "p",
            &LogParams {
                limit_bytes: Some(8),
                ..lp("a")
            }
        )
        .await
        .unwrap(),
        "line 1\nl"
    );
    assert_eq!(
        pods.logs(
            "p",
            &LogParams {
                previous: true,
                ..lp("b")
            }
        )
        .await
        .unwrap(),
        "try\n"
    );
    let err = |e: kube::Error| match e {
        kube::Error::Api(s) => (s.code, s.message),
        o => panic!("{o:?}"),
    };
    assert_eq!(err(pods.logs("p", &LogParams::default()).await.unwrap_err()), (400, "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [init]".to_string()));
    assert_eq!(
        err(pods.logs("p", &lp("zz")).await.unwrap_err()),
        (400, "container zz is not valid for pod p".to_string())
    );
    assert_eq!(
        err(pods
            .logs(
                "p",
                &LogParams {
                    previous: true,
                    ..lp("a")
                }
            )
            .await
            .unwrap_err())
        .0,
        400
    );
    assert_eq!(err(pods.logs("nope", &lp("a")).await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn held_tasks_run_until_released() {
    let sim = Sim::start().await.unwrap();
    sim.runtime().set(
        ImageRule::any(),
        Behavior::hold().exit_code(0).output(["working"]),
    );
    let jobs: Api<Job> = Api::default_namespaced(sim.client());
    jobs.create(&PostParams::default(), &job("held", json!({})))
        .await
        .unwrap();
    wait_until(|| !sim.runtime().held().is_empty(), T)
        .await
        .unwrap();
    wait_until(|| job_obj(&sim, "held")["status"]["ready"] == 1, T)
        .await
        .unwrap();
    assert_eq!(job_obj(&sim, "held")["status"]["active"], 1);
    assert_eq!(sim.release("held"), 1);
    wait_until(|| has_cond(&sim, "held", "Complete"), T)
        .await
        .unwrap();
    // Clients see it succeed through the API, and nothing is held any more.
    let api: Api<Job> = Api::default_namespaced(sim.client());
    wait_until_async(
        || async {
            api.get("held")
                .await
                .is_ok_and(|job| job.status.and_then(|s| s.succeeded) == Some(1))
        },
        T,
    )
    .await
    .unwrap();
    assert_eq!(sim.release("held"), 0);
}

/// A pod the API server refuses (as Pod Security or a webhook would): the Job makes none,
/// and its `FailedCreate` Event says why, through both Event APIs, as on the real server.
#[tokio::test]
async fn a_refused_pod_leaves_the_job_without_pods_and_a_failed_create_event() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    use kube::api::ListParams;

    let sim = Sim::start().await.unwrap();
    sim.admission().refuse_pods(
        "root-tools:*",
        "violates PodSecurity \"restricted:latest\": runAsUser=0",
    );
    let pods: Api<Pod> = Api::default_namespaced(sim.client());
    let refused = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "direct"}, "spec": {
                "containers": [{"name": "main", "image": "root-tools:1"}]}}))
            .unwrap(),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = refused else {
        panic!("{refused}")
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "pods \"direct\" is forbidden: violates PodSecurity \"restricted:latest\": runAsUser=0"
    );

    let jobs: Api<Job> = Api::default_namespaced(sim.client());
    let spec =
        json!({"template": {"spec": {"containers": [{"name": "main", "image": "root-tools:1"}]}}});
    jobs.create(&PostParams::default(), &job("root", spec))
        .await
        .unwrap();
    let events: Api<Event> = Api::default_namespaced(sim.client());
    let of_job = ListParams::default().fields("regarding.kind=Job,regarding.name=root");
    wait_until_async(
        || async { !events.list(&of_job).await.unwrap().items.is_empty() },
        T,
    )
    .await
    .unwrap();
    let event = events.list(&of_job).await.unwrap().items.remove(0);
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.reason.as_deref(), Some("FailedCreate"));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("job-controller")
    );
    let note = event.note.unwrap();
    assert!(
        note.starts_with("Error creating: pods \"root-")
            && note.ends_with(
                "\" is forbidden: violates PodSecurity \"restricted:latest\": runAsUser=0"
            ),
        "{note}"
    );
    let core: Api<CoreEvent> = Api::default_namespaced(sim.client());
    let core_events = core
        .list(&ListParams::default().fields("involvedObject.name=root"))
        .await
        .unwrap();
    assert_eq!(core_events.items[0].message.as_deref(), Some(note.as_str()));
    assert!(job_pods(&sim, "root").is_empty());
    assert!(
        condition_types(&job_obj(&sim, "root")).is_empty(),
        "still running"
    );
}

/// What the real API server's pod validation refuses of a Job's template, kube-sim refuses with
/// the same field and message (checked on Kubernetes v1.36.3 with `kubectl create
/// --dry-run=server`): a mount of a volume the pod does not declare, two mounts at one path,
/// `privileged` with `allowPrivilegeEscalation: false`, a ConfigMap item's path that steps back,
/// a label the Job API sets (`job-name`) set to another value.
#[tokio::test]
async fn a_pod_template_the_real_server_refuses_is_refused() {
    let sim = Sim::start().await.unwrap();
    let jobs: Api<Job> = Api::default_namespaced(sim.client());
    let with = |mounts: Value, volumes: Value, security: Value| {
        job(
            "bad",
            json!({"template": {"spec": {
                "volumes": volumes,
                "containers": [{"name": "main", "image": "busybox:1.36",
                                "volumeMounts": mounts, "securityContext": security}]
            }}}),
        )
    };
    let cases = [
        (
            with(
                json!([{"name": "files", "mountPath": "/keptn"}]),
                json!([]),
                json!({}),
            ),
            r#"spec.template.spec.containers[0].volumeMounts[0].name: Not found: "files""#,
        ),
        (
            with(
                json!([{"name": "a", "mountPath": "/x"}, {"name": "b", "mountPath": "/x"}]),
                json!([{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]),
                json!({}),
            ),
            r#"spec.template.spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/x": must be unique"#,
        ),
        (
            with(
                json!([]),
                json!([]),
                json!({"privileged": true, "allowPrivilegeEscalation": false}),
            ),
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ),
        (
            with(
                json!([]),
                json!([{"name": "files", "configMap": {"name": "run-files", "items": [
                    {"key": "0-ok", "path": "ok"},
                    {"key": "1-weird", "path": "weird/.."}
                ]}}]),
                json!({}),
            ),
            r#"spec.template.spec.volumes[0].configMap.items[1].path: Invalid value: "weird/..": must not contain '..'"#,
        ),
        (
            job(
                "bad",
                json!({"template": {
                    "metadata": {"labels": {"job-name": "other"}},
                    "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}
                }}),
            ),
            "spec.template.metadata.labels[job-name]: Invalid value",
        ),
    ];
    for (job, message) in cases {
        match jobs.create(&PostParams::default(), &job).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(status.message.contains(message), "{}", status.message);
            }
            other => panic!("{message}: {other:?}"),
        }
    }
    // Declared, at paths of their own: made.
    let fine = with(
        json!([{"name": "a", "mountPath": "/x"}, {"name": "b", "mountPath": "/y"}]),
        json!([{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]),
        json!({"allowPrivilegeEscalation": false}),
    );
    jobs.create(&PostParams::default(), &fine).await.unwrap();
}
