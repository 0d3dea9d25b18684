//! Least privilege, proven: the plain install (`kubectl apply -f crds/ -f deploy/service.yaml`)
//! is applied to kube-sim, the real operator binary runs as the Deployment's ServiceAccount
//! with the Deployment's settings, kube-sim enforces the shipped Role (403 for anything it
//! does not grant), and every sample event is replayed with `job-executor send` until every
//! run has finished. Then, from kube-sim's request log: the operator was never refused, every
//! permission it used is granted, and every permission granted was used (except the one the
//! real API server needs and kube-sim cannot observe).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube_sim::{Behavior, ImageRule, Sim, wait_until, wait_until_async};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::chart::renderings;
use crate::common::{BIN, documents, find, read, root, tempdir};

/// One RBAC permission: (verb, API group, resource, subresource).
type Permission = (String, String, String, String);

fn permission(verb: &str, group: &str, resource: &str, subresource: &str) -> Permission {
    (
        verb.into(),
        group.into(),
        resource.into(),
        subresource.into(),
    )
}

/// The Role's rules, expanded to single permissions (no wildcards are shipped).
fn granted(role: &Value) -> BTreeSet<Permission> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let mut set = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        // Only the Lease is granted by name (reading and renewing one's own Lease).
        if let Some(names) = rule.get("resourceNames") {
            assert_eq!(rule["apiGroups"], json!(["coordination.k8s.io"]), "{rule}");
            assert_eq!(rule["resources"], json!(["leases"]), "{rule}");
            assert_eq!(names.as_array().map(Vec::len), Some(1), "{rule}");
        }
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    assert!(
                        !(group.contains('*') || resource.contains('*') || verb.contains('*')),
                        "no wildcards in the shipped Role: {rule}"
                    );
                    let (resource, sub) = resource.split_once('/').unwrap_or((&resource, ""));
                    set.insert(permission(&verb, &group, resource, sub));
                }
            }
        }
    }
    set
}

/// `kubectl apply -f crds/ -f deploy/service.yaml`, as the install guide says,
/// as the cluster admin (no credentials), with the kubectl of `$KUBECTL` (`scripts/test` sets
/// it to the control plane's) or the PATH's. A missing kubectl fails the test.
async fn apply_plain_install(sim: &Sim, dir: &Path) {
    let kubeconfig = sim.write_kubeconfig(dir.join("admin-kubeconfig")).unwrap();
    let kubectl = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let output = std::process::Command::new(&kubectl)
        .args(["apply", "-f", "crds/", "-f", "deploy/service.yaml"])
        .current_dir(root())
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBECACHEDIR", dir.join("kube-cache"))
        .env("HOME", dir)
        .output()
        .unwrap_or_else(|error| {
            panic!("{kubectl:?} cannot run ({error}): scripts/test provides it (scripts/cluster)")
        });
    assert!(
        output.status.success(),
        "kubectl apply failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn create_secret(sim: &Sim, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let secrets: Api<Secret> = Api::namespaced(sim.client(), namespace);
    let string_data: BTreeMap<&str, &str> = data.iter().copied().collect();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": string_data,
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The operator container's environment, resolved from the objects in the simulated cluster
/// as the kubelet would.
/// The container's environment as the kubelet gives it: the ConfigMap, the Secret keys, and
/// the paths of mounted Secrets pointing at their files written under `mounts` (as the
/// kubelet writes them into the pod).
fn pod_environment(
    sim: &Sim,
    namespace: &str,
    pod: &Value,
    container: &Value,
    mounts: &Path,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    // In order, a later source's key winning; an optional source that does not exist adds
    // nothing.
    for source in container["envFrom"].as_array().unwrap() {
        let (resource, reference) = match &source["configMapRef"] {
            Value::Null => ("secrets", &source["secretRef"]),
            reference => ("configmaps", reference),
        };
        let name = reference["name"].as_str().unwrap();
        let Some(object) = sim.get_object("", resource, namespace, name) else {
            assert_eq!(reference["optional"], true, "{name} is missing");
            continue;
        };
        for (key, value) in object["data"].as_object().into_iter().flatten() {
            let value = value.as_str().unwrap();
            let value = match resource {
                "secrets" => decode_base64(value),
                _ => value.to_string(),
            };
            env.insert(key.clone(), value);
        }
        for (key, value) in object["stringData"].as_object().into_iter().flatten() {
            env.insert(key.clone(), value.as_str().unwrap().to_string());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            env.insert(
                var["name"].as_str().unwrap().to_string(),
                "job-executor-pod".to_string(),
            );
            continue;
        }
        let reference = &var["valueFrom"]["secretKeyRef"];
        let secret = sim
            .get_object(
                "",
                "secrets",
                namespace,
                reference["name"].as_str().unwrap(),
            )
            .unwrap();
        let value = secret["stringData"][reference["key"].as_str().unwrap()]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                secret["data"][reference["key"].as_str().unwrap()]
                    .as_str()
                    .map(decode_base64)
            })
            .unwrap();
        env.insert(var["name"].as_str().unwrap().to_string(), value);
    }
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let Some(secret_name) = volume["secret"]["secretName"].as_str() else {
            continue;
        };
        let secret = sim
            .get_object("", "secrets", namespace, secret_name)
            .unwrap();
        let mount_path = mount["mountPath"].as_str().unwrap();
        let local = mounts.join(mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&local).unwrap();
        for item in volume["secret"]["items"].as_array().unwrap() {
            let key = item["key"].as_str().unwrap();
            let value = secret["stringData"][key]
                .as_str()
                .map(str::to_string)
                .or_else(|| secret["data"][key].as_str().map(decode_base64))
                .unwrap();
            std::fs::write(local.join(item["path"].as_str().unwrap()), value).unwrap();
        }
        for value in env.values_mut() {
            if let Some(rest) = value.strip_prefix(mount_path) {
                *value = format!("{}{rest}", local.display());
            }
        }
    }
    env
}

fn decode_base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|a| *a == byte).unwrap() as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The sink, reading events as Keptn's API does (its `POST /v1/event` takes the whole event
/// as the JSON body, `type`, `source` and `data` required, and refuses anything else with
/// 422): records the `type` of every event it takes.
async fn sink() -> (String, Arc<Mutex<Vec<String>>>) {
    let types: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = types.clone();
    let app = Router::new().route(
        "/",
        post(move |body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                let kind = event["type"].as_str().unwrap_or_default();
                if kind.is_empty() || !event["source"].is_string() || event["data"].is_null() {
                    return axum::http::StatusCode::UNPROCESSABLE_ENTITY;
                }
                recorded.lock().unwrap().push(kind.to_string());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, types)
}

fn phase(run: &Value) -> &str {
    run["status"]["phase"].as_str().unwrap_or("")
}

/// docs/install.md's "Permissions" table names every permission of the shipped Role, and no
/// other.
#[test]
fn the_install_guide_s_permissions_table_is_the_shipped_role() {
    let guide = read("docs/install.md");
    let section = guide
        .split("\n## Permissions\n")
        .nth(1)
        .expect("docs/install.md has a Permissions section");
    let mut listed = BTreeSet::new();
    let rows = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2);
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [_, group, resource, verbs, ..] = cells[..] else {
            panic!("a row of four cells: {row}");
        };
        let group = match group {
            "(core)" => "",
            quoted => quoted.trim_matches('`'),
        };
        let resource = resource.trim_matches('`');
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        for verb in verbs.split(',').map(str::trim) {
            listed.insert(permission(verb, group, resource, sub));
        }
    }
    let manifests = documents(&read("deploy/service.yaml"));
    assert_eq!(listed, granted(find(&manifests, "Role", None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_needs_exactly_the_shipped_role() {
    let dir = tempdir("rbac");
    let sim = Sim::start().await.unwrap();
    apply_plain_install(&sim, &dir).await;

    let manifests = documents(&read("deploy/service.yaml"));
    let deployment = find(&manifests, "Deployment", None);
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let user = format!(
        "system:serviceaccount:{namespace}:{}",
        pod["serviceAccountName"].as_str().unwrap()
    );
    // What the install guide has the user create, and the Secrets the sample config uses.
    create_secret(
        &sim,
        namespace,
        "job-executor",
        &[
            ("ingest-token", "t0ken"),
            ("sink-headers", "x-token: sink-t0ken"),
        ],
    )
    .await;
    let job_namespace = sim
        .get_object(
            "",
            "configmaps",
            namespace,
            container["envFrom"][0]["configMapRef"]["name"]
                .as_str()
                .unwrap(),
        )
        .unwrap()["data"]["JOB_EXECUTOR_JOB_NAMESPACE"]
        .as_str()
        .unwrap()
        .to_string();
    create_secret(
        &sim,
        &job_namespace,
        "locust-credentials",
        &[("LOCUST_USER", "u"), ("LOCUST_PASSWORD", "p")],
    )
    .await;
    create_secret(&sim, &job_namespace, "carts-api", &[("token", "api")]).await;
    // The example's JobSchedule: the operator watches it and records its next slot.
    let applied =
        std::process::Command::new(std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into()))
            .args([
                "apply",
                "-n",
                &job_namespace,
                "-f",
                "examples/schedules/carts-nightly.yaml",
            ])
            .current_dir(root())
            .env("KUBECONFIG", dir.join("admin-kubeconfig"))
            .env("KUBECACHEDIR", dir.join("kube-cache"))
            .env("HOME", &dir)
            .output()
            .unwrap();
    assert!(applied.status.success(), "{applied:?}");

    // Rarely used paths, driven on purpose so that they are covered too: an image that never
    // starts (the operator deletes its Job) and a task whose Job vanishes while it runs (the
    // operator looks for it with a get).
    sim.runtime().set(
        ImageRule::image("ghcr.io/acme/sli-exporter:*"),
        Behavior::never_starts("ImagePullBackOff"),
    );
    sim.runtime()
        .set(ImageRule::image("bitnami/kubectl:*"), Behavior::hold());
    // … and a Job that makes no pod, its pods refused as a ResourceQuota refuses them (the
    // operator reads the Job's Events to say why).
    sim.admission().refuse_pods(
        "alpine/helm:*",
        "exceeded quota: compute, requested: requests.cpu=1, used: requests.cpu=4, limited: requests.cpu=4",
    );

    // The operator, as the Deployment runs it: its args, its environment from the ConfigMap
    // and the Secret, its ServiceAccount's identity.
    let (sink_url, sink_events) = sink().await;
    let mut env = pod_environment(&sim, namespace, pod, container, &dir.join("pod"));
    assert_eq!(
        std::fs::read_to_string(&env["JOB_EXECUTOR_INGEST_TOKEN_FILE"]).unwrap(),
        "t0ken",
        "the ingest token, mounted from the Secret"
    );
    for (key, value) in [
        ("JOB_EXECUTOR_SINK_URL", sink_url.as_str()),
        ("JOB_EXECUTOR_LISTEN", "127.0.0.1:0"),
        ("JOB_EXECUTOR_ADMIN_LISTEN", "127.0.0.1:0"),
        ("JOB_EXECUTOR_NEVER_STARTED_TIMEOUT_SECONDS", "2"),
        // The deploy values name no repository; the sample configs come from the directory
        // source (tests/git.rs covers the git source, whose RBAC needs are the same).
        (
            "JOB_EXECUTOR_CONFIG_DIR",
            root().join("examples").to_str().unwrap(),
        ),
        ("RUST_LOG", "info"),
    ] {
        env.insert(key.to_string(), value.to_string());
    }
    env.retain(|key, _| !key.starts_with("JOB_EXECUTOR_GIT_"));
    let kubeconfig = sim
        .write_kubeconfig_as(dir.join("operator-kubeconfig"), &user)
        .unwrap();
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut operator = tokio::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .envs(&env)
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("operator.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(operator.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ingest = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ingest="))
        .unwrap()
        .to_string();
    let admin = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .unwrap()
        .to_string();
    let url = format!("http://{admin}/readyz");
    if wait_until_async(|| http_get_ok(&url), Duration::from_secs(60))
        .await
        .is_err()
    {
        panic!(
            "{url} never answered 200; operator log:\n{}\nits requests: {:#?}",
            std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default(),
            sim.requests()
                .iter()
                .filter(|r| r.user == user)
                .map(|r| (&r.verb, &r.path, r.status))
                .collect::<Vec<_>>()
        );
    }

    // Every sample event, as a user sends them.
    let sent = tokio::process::Command::new(BIN)
        .args([
            "send",
            "test-events",
            "--to",
            &format!("http://{ingest}/"),
            "--token",
            "t0ken",
        ])
        .current_dir(root())
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&sent.stdout).into_owned();
    assert!(
        sent.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    // The held Job vanishes behind the operator's back.
    let held_job = || {
        sim.list_objects("batch", "jobs", Some(&job_namespace))
            .iter()
            .find(|j| {
                j["spec"]["template"]["spec"]["containers"][0]["image"] == "bitnami/kubectl:1.33"
            })
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
    };
    wait_until(|| held_job().is_some(), Duration::from_secs(30))
        .await
        .unwrap();
    let held = held_job().unwrap();
    // Its run's next status write (the task's end, once the Job is found gone) is held on its
    // way while the run is labelled: refused for the version, the status is read again (`get`)
    // and the write made on the new version.
    let held_run = held.rsplit_once('-').unwrap().0.to_string();
    sim.faults()
        .delay_next_request("patch", "jobruns/status", &held_run, Duration::from_secs(3));
    assert!(sim.force_remove("batch", "jobs", &job_namespace, &held));
    wait_until(
        || !sim.faults().request_delay_pending(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let runs: Api<job_executor::crd::JobRun> = Api::namespaced(sim.client(), &job_namespace);
    runs.patch(
        &held_run,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {"example.com/seen": "yes"}}})),
    )
    .await
    .unwrap();

    // Every run ends (the vanished Job is noticed after the operator's 30 s grace).
    let all_runs = || sim.list_objects("job-executor.dev", "jobruns", Some(&job_namespace));
    wait_until(
        || {
            let runs = all_runs();
            !runs.is_empty()
                && runs
                    .iter()
                    .all(|r| matches!(phase(r), "Succeeded" | "Failed"))
        },
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "runs did not finish: {:#?}",
            sim.list_objects("job-executor.dev", "jobruns", Some(&job_namespace))
                .iter()
                .map(|r| (r["metadata"]["name"].clone(), r["status"].clone()))
                .collect::<Vec<_>>()
        )
    });
    let runs = all_runs();
    let reported = |prefix: &str| {
        runs.iter()
            .filter(|r| {
                r["spec"]["action"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(prefix)
            })
            .map(phase)
            .collect::<Vec<_>>()
    };
    let locust = reported("Run locust");
    assert!(
        !locust.is_empty() && locust.iter().all(|p| *p == "Succeeded"),
        "{runs:#?}"
    );
    assert_eq!(reported("Provide SLIs"), ["Failed"], "never started");
    assert_eq!(
        reported("Scale on problems"),
        ["Failed"],
        "its Job vanished"
    );
    let deploy: Vec<&Value> = runs
        .iter()
        .filter(|r| r["spec"]["action"]["name"] == "Deploy with helm")
        .collect();
    assert!(!deploy.is_empty(), "{runs:#?}");
    for run in deploy {
        let message = run["status"]["tasks"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains(" made no pod within 2s: FailedCreate: Error creating: pods ")
                && message.contains("is forbidden: exceeded quota: compute"),
            "{message}"
        );
    }
    wait_until(
        || {
            let events = sink_events.lock().unwrap();
            events.iter().filter(|t| t.ends_with(".finished")).count()
                >= runs
                    .iter()
                    .filter(|r| r["spec"]["action"]["silent"] != true)
                    .count()
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    wait_until(
        || {
            sim.list_objects("job-executor.dev", "jobschedules", Some(&job_namespace))
                .iter()
                .all(|s| s["status"]["nextFireTime"].is_string())
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    operator.kill().await.unwrap();

    // The same replica restarted with a retention of a second deletes the finished runs (the
    // runs were read above; with the chart's retention of days they would stay).
    let mut operator = tokio::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .envs(&env)
        .env("JOB_EXECUTOR_JOBRUN_RETENTION_SECONDS", "1")
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("operator-retention.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until(
        || {
            sim.list_objects("job-executor.dev", "jobruns", Some(&job_namespace))
                .is_empty()
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    operator.kill().await.unwrap();

    // What the operator did in the API server, as kube-sim saw it.
    let requests: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.user == user && r.is_resource_request())
        .collect();
    let refused: Vec<_> = requests
        .iter()
        .filter(|r| r.status == 401 || r.status == 403)
        .collect();
    assert!(refused.is_empty(), "the operator was refused: {refused:#?}");
    assert!(
        requests.iter().all(|r| r.namespace == job_namespace),
        "the operator stays in the job namespace"
    );
    let used: BTreeSet<Permission> = requests
        .iter()
        .map(|r| permission(&r.verb, &r.group, &r.resource, &r.subresource))
        .collect();

    let mut roles = vec![(
        "deploy/service.yaml".to_string(),
        find(&manifests, "Role", None).clone(),
    )];
    for (name, yaml) in renderings() {
        roles.push((
            format!("chart with {name}"),
            find(&documents(&yaml), "Role", None).clone(),
        ));
    }
    for (name, role) in roles {
        let granted = granted(&role);
        let ungranted: Vec<_> = used.difference(&granted).collect();
        assert!(
            ungranted.is_empty(),
            "{name}: used but not granted: {ungranted:?}"
        );
        let unused: BTreeSet<Permission> = granted.difference(&used).cloned().collect();
        assert!(
            unused.is_empty(),
            "{name}: granted but never used: {unused:?}"
        );
    }
    eprintln!("permissions used by the operator: {used:#?}\nsend report:\n{report}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A plain HTTP/1.1 GET; true on a 200 answer.
async fn http_get_ok(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().as_str().to_string();
    let Ok(mut stream) = tokio::net::TcpStream::connect(&authority).await else {
        return false;
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n",
        uri.path()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer.starts_with("HTTP/1.1 200")
}
