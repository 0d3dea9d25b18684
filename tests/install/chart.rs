//! The Helm chart and the plain manifests rendered from it.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::{
    CHART, DEPLOY_NETWORK_VALUES, DEPLOY_VALUES, FULL_VALUES, NOTIFICATIONS_VALUES, documents,
    find, helm, python, read, render, root, tempdir, validate_manifests,
};

/// The value sets every check runs on: defaults, everything on, and the deploy/ values.
pub fn renderings() -> Vec<(&'static str, String)> {
    vec![
        ("default values", render(&[])),
        ("ci/full-values.yaml", render(&[FULL_VALUES])),
        (
            "deploy values",
            render(&[DEPLOY_VALUES, DEPLOY_NETWORK_VALUES]),
        ),
    ]
}

#[test]
fn chart_crds_are_the_generated_crds() {
    for file in ["jobrun.yaml", "jobschedule.yaml"] {
        assert_eq!(
            read(&format!("charts/job-executor/crds/{file}")),
            read(&format!("crds/{file}")),
            "charts/job-executor/crds/ must be a copy of crds/ (cp crds/*.yaml charts/job-executor/crds/)"
        );
    }
}

#[test]
fn chart_renders_and_validates_against_kubernetes_schemas() {
    for (name, yaml) in renderings() {
        let docs = documents(&yaml);
        assert!(docs.len() >= 7, "{name}: {} documents", docs.len());
        validate_manifests(&name.replace(['/', ' '], "-"), &yaml);
    }
    validate_manifests("crds", &read("crds/jobrun.yaml"));
    validate_manifests("crds-schedule", &read("crds/jobschedule.yaml"));
}

#[test]
fn chart_lints_without_errors() {
    for values in [
        None,
        Some(FULL_VALUES),
        Some(DEPLOY_VALUES),
        Some(NOTIFICATIONS_VALUES),
    ] {
        let mut args = vec!["lint", CHART];
        if let Some(file) = values {
            args.extend(["-f", file]);
        }
        let report = helm(&args);
        assert!(report.contains(", 0 error(s)"), "{values:?}:\n{report}");
    }
}

/// docs/install.md's table of values names every top-level value of the chart.
#[test]
fn the_install_guide_names_every_value_of_the_chart() {
    let schema: Value =
        serde_json::from_str(&read("charts/job-executor/values.schema.json")).unwrap();
    let guide = read("docs/install.md");
    let table = guide
        .split("| values | what they set |")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("docs/install.md's table of values");
    let missing: Vec<&String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|key| !table.contains(&format!("`{key}`")) && !table.contains(&format!("`{key}.")))
        .collect();
    assert!(missing.is_empty(), "docs/install.md names no {missing:?}");
}

#[test]
fn chart_refuses_values_outside_its_schema() {
    let dir = tempdir("bad-values");
    for (bad, complaint) in [
        ("replicas: 11\n", "/replicas"),
        ("sink:\n  url: ftp://sink.example\n", "/sink/url"),
        ("sink:\n  backoffPolicy: random\n", "/sink/backoffPolicy"),
        ("sink:\n  backoffDelay: soon\n", "/sink/backoffDelay"),
        // What the operator refuses at its start: a crash loop otherwise.
        (
            "sink:\n  backoffDelay: 0s\n",
            "sink.backoffDelay (0s) must be more than zero and at most an hour",
        ),
        (
            "sink:\n  backoffDelay: 61m\n",
            "sink.backoffDelay (61m) must be more than zero and at most an hour",
        ),
        (
            "sink:\n  backoffDelay: 1h30m\n",
            "sink.backoffDelay (1h30m) must be more than zero and at most an hour",
        ),
        (
            "sink:\n  backoffDelay: PT2H\n",
            "sink.backoffDelay (PT2H) must be more than zero and at most an hour",
        ),
        (
            "sink:\n  backoffDelay: PT0S\n",
            "sink.backoffDelay (PT0S) must be more than zero and at most an hour",
        ),
        // Read to the nanosecond by the operator: less is zero.
        (
            "sink:\n  backoffDelay: 0.000000001ms\n",
            "sink.backoffDelay (0.000000001ms) must be more than zero and at most an hour",
        ),
        ("sink:\n  retries: 4294967296\n", "/sink/retries"),
        // Requests above their limits: the operator refuses to start so.
        (
            "settings:\n  defaultResources: {memoryLimit: 100Mi}\n",
            "settings.defaultResources.memoryRequest (128Mi) is above memoryLimit (100Mi)",
        ),
        (
            "settings:\n  defaultResources: {cpuRequest: \"1.5\", cpuLimit: 1}\n",
            "settings.defaultResources.cpuRequest (1.5) is above cpuLimit (1)",
        ),
        (
            "settings:\n  defaultResources: {memoryRequest: 1073741824, memoryLimit: 512Mi}\n",
            "settings.defaultResources.memoryRequest (1.073741824e+09) is above memoryLimit (512Mi)",
        ),
        (
            "settings:\n  defaultResources: {cpuRequest: 1000000001n, cpuLimit: 1}\n",
            "settings.defaultResources.cpuRequest (1000000001n) is above cpuLimit (1)",
        ),
        // Quantities the operator refuses: `K` (Kubernetes has `k` and `Ki`), an exponent of
        // three digits.
        (
            "settings:\n  defaultResources: {memoryLimit: 512K}\n",
            "/settings/defaultResources/memoryLimit",
        ),
        (
            "settings:\n  defaultResources: {cpuLimit: \"1e100\"}\n",
            "/settings/defaultResources/cpuLimit",
        ),
        ("imagePullSecrets: [\"\"]\n", "/imagePullSecrets/0"),
        (
            "settings:\n  eventSource: \"job\u{a0}executor\"\n",
            "/settings/eventSource",
        ),
        // Units the operator's parser refuses: out of order, repeated, a fraction before
        // another unit.
        ("sink:\n  backoffDelay: 30s1m\n", "/sink/backoffDelay"),
        ("sink:\n  backoffDelay: 1s1s\n", "/sink/backoffDelay"),
        ("sink:\n  backoffDelay: 1.5m30s\n", "/sink/backoffDelay"),
        ("sink:\n  backoffDelay: P1D\n", "/sink/backoffDelay"),
        // Patterns reach the operator joined by commas.
        (
            "settings:\n  allowedImages: [\"ghcr.io/{acme,corp}/*\"]\n",
            "/settings/allowedImages/0",
        ),
        (
            "service:\n  listenAddress: \"[::]\"\n",
            "/service/listenAddress",
        ),
        (
            "service:\n  listenAddress: localhost\n",
            "/service/listenAddress",
        ),
        (
            "service:\n  listenAddress: \"1:2:3\"\n",
            "/service/listenAddress",
        ),
        (
            "settings:\n  security: {runAsUser: 0}\n",
            "settings.security.runAsUser 0 is root, which runAsNonRoot (true) forbids",
        ),
        (
            "jobServiceAccount: {create: false, name: job-executor}\n",
            "jobServiceAccount.name is the operator's own ServiceAccount",
        ),
        ("settings:\n  kubeApiQps: 0.0005\n", "/settings/kubeApiQps"),
        (
            "settings:\n  neverStartedTimeoutSeconds: 0\n",
            "/settings/neverStartedTimeoutSeconds",
        ),
        (
            "ingest:\n  storeTimeoutSeconds: 301\n",
            "/ingest/storeTimeoutSeconds",
        ),
        (
            "settings:\n  allowPrivileged: \"yes\"\n",
            "/settings/allowPrivileged",
        ),
        (
            "settings:\n  defaultTtlSecondsAfterFinished: 10\n",
            "/settings/defaultTtlSecondsAfterFinished",
        ),
        ("sink:\n  mode: carrier-pigeon\n", "/sink/mode"),
        // NATS takes no headers: the operator would refuse to start.
        (
            "sink:\n  url: nats://nats:4222\n  headersSecret: {name: keptn-api-token}\n",
            "/sink/headersSecret/name",
        ),
        ("imagePullSecret: [x]\n", "imagePullSecret"),
        (
            "notifications:\n  secret: hooks\n  targets: [{slack: \"ops/team\"}]\n",
            "/notifications/targets/0/slack",
        ),
        (
            "notifications:\n  secret: hooks\n  targets: [{slack: ops, webhook: ops}]\n",
            "/notifications/targets/0",
        ),
        (
            "notifications:\n  secret: hooks\n  targets: [{webhook: audit, when: [always]}]\n",
            "/notifications/targets/0/when/0",
        ),
        // Targets name keys of the Secret: without one they could never be sent.
        (
            "notifications:\n  targets: [{slack: ops}]\n",
            "/notifications/secret",
        ),
        (
            "notifications:\n  secret: hooks\n  retries: 101\n",
            "/notifications/retries",
        ),
        // One config source: the operator refuses two at its start.
        (
            "configSource:\n  git: {url: \"https://git.example/configs.git\"}\n  directory: {path: /configs, volume: {emptyDir: {}}}\n",
            "/configSource/git/url",
        ),
        // What the operator checks at its start: a crash loop otherwise.
        (
            "leaderElection:\n  leaseDurationSeconds: 15\n  renewDeadlineSeconds: 10\n  retryPeriodSeconds: 9\n",
            "leaderElection: leaseDurationSeconds (15) must be above renewDeadlineSeconds (10), and that above 1.2 × retryPeriodSeconds (9) and above retryPeriodSeconds + 1",
        ),
        // A renew deadline that leaves the leader never a second of its lease to act in.
        (
            "leaderElection:\n  leaseDurationSeconds: 3\n  renewDeadlineSeconds: 1.2\n  retryPeriodSeconds: 0.5\n",
            "and above retryPeriodSeconds + 1 (a leader acts only with a second of its lease left)",
        ),
        (
            "settings:\n  jobLabels: {\"job-executor.dev/run\": x}\n",
            "invalid propertyName 'job-executor.dev/run'",
        ),
        (
            "settings:\n  jobLabels: {job-name: x}\n",
            "invalid propertyName 'job-name'",
        ),
        (
            "settings:\n  jobLabels: {keptn.sh/project: x}\n",
            "invalid propertyName 'keptn.sh/project'",
        ),
        (
            "settings:\n  eventSource: \"job executor\"\n",
            "/settings/eventSource",
        ),
        (
            "leaderElection:\n  retryPeriodSeconds: 0.01\n",
            "/leaderElection/retryPeriodSeconds",
        ),
        (
            "settings:\n  jobLabels: {team: \"not ok\"}\n",
            "/settings/jobLabels/team",
        ),
        // A directory needs its volume (else the Deployment is not even YAML).
        (
            "configSource:\n  directory: {path: /configs}\n",
            "/configSource/directory",
        ),
        // Quantities the operator refuses at its start ("must not be negative").
        (
            "settings:\n  defaultResources: {cpuLimit: \"-1\"}\n",
            "/settings/defaultResources/cpuLimit",
        ),
        (
            "settings:\n  defaultResources: {memoryRequest: -5}\n",
            "/settings/defaultResources/memoryRequest",
        ),
        (
            "ingest:\n  maxBodyBytes: 2097152\n  maxBodyBytesInFlight: 1048576\n",
            "ingest.maxBodyBytesInFlight is less than ingest.maxBodyBytes",
        ),
        // No sink at all: neither a URL nor a Secret holding one.
        ("sink:\n  url: \"\"\n", "/sink"),
    ] {
        let file = dir.join("values.yaml");
        std::fs::write(&file, bad).unwrap();
        let output = Command::new(python())
            .args(["tests/install/helm.py", "render", CHART, "-f"])
            .arg(&file)
            .current_dir(root())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad} was accepted");
        assert!(stderr.contains(complaint), "{bad}: {stderr}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn deploy_manifests_are_the_chart_rendered_with_the_documented_values() {
    let dir = tempdir("deploy");
    let output = Command::new(root().join("scripts/render-deploy"))
        .arg(&dir)
        .env("HELM_PYTHON", python())
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in ["service.yaml", "network-policies.yaml"] {
        let fresh = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            fresh == read(&format!("deploy/{file}")),
            "deploy/{file} differs from the chart rendered with deploy/values/: run scripts/render-deploy"
        );
        validate_manifests(&format!("deploy-{file}"), &fresh);
    }
    std::fs::remove_dir_all(dir).unwrap();
    // Nothing but the manifests in deploy/ itself, so `kubectl apply -f deploy/` works.
    let mut files: Vec<String> = std::fs::read_dir(root().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["network-policies.yaml", "service.yaml"]);
}

fn env_of(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn chart_wires_image_accounts_namespaces_probes_and_security() {
    for (name, yaml) in renderings() {
        let docs = documents(&yaml);
        let deployment = find(&docs, "Deployment", None);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let config = find(&docs, "ConfigMap", None);
        let settings = &config["data"];
        // The operator image is the init image of tasks.
        assert_eq!(
            container["image"], settings["JOB_EXECUTOR_INIT_IMAGE"],
            "{name}"
        );
        assert_eq!(container["args"], json!(["run"]), "{name}");
        assert_eq!(
            container["envFrom"][0]["configMapRef"]["name"], config["metadata"]["name"],
            "{name}"
        );
        // Secrets come from Secrets, never from the ConfigMap.
        for secret in ["JOB_EXECUTOR_INGEST_TOKEN", "JOB_EXECUTOR_SINK_HEADERS"] {
            assert!(
                settings.get(secret).is_none(),
                "{name}: {secret} in the ConfigMap"
            );
        }
        let env = env_of(container);
        assert!(
            env.iter().all(|(n, e)| {
                e["valueFrom"]["secretKeyRef"]["name"].is_string()
                    || (n == "JOB_EXECUTOR_IDENTITY"
                        && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name")
            }),
            "{name}: {env:?}"
        );
        // The ingest is protected by a token by default, mounted from its Secret as a file
        // (so a rotated token needs no restart), readable by the pod's fsGroup; so are the
        // sink's headers, CA bundle and the dead-letter sink's headers when set.
        assert!(
            settings["JOB_EXECUTOR_INGEST_TOKEN_FILE"].is_string(),
            "{name}: no ingest token"
        );
        let files: Vec<(&String, &str)> = settings
            .as_object()
            .unwrap()
            .iter()
            .filter(|(key, _)| key.ends_with("_FILE"))
            .map(|(key, value)| (key, value.as_str().unwrap()))
            .collect();
        for (setting, path) in files {
            let (dir, file) = path.rsplit_once('/').unwrap();
            let mount = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["mountPath"] == dir)
                .unwrap_or_else(|| panic!("{name}: {setting}: nothing mounted at {dir}"));
            assert_eq!(mount["readOnly"], true, "{name}: {setting}");
            let volume = deployment["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            let secret = &volume["secret"];
            assert_eq!(secret["items"][0]["path"], file, "{name}: {setting}");
            assert_eq!(secret["defaultMode"], 0o440, "{name}: {setting}");
            let secret_name = secret["secretName"].as_str().unwrap();
            let key = secret["items"][0]["key"].as_str().unwrap();
            let shipped = docs
                .iter()
                .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == secret_name);
            if let Some(shipped) = shipped {
                assert!(
                    shipped["data"].get(key).is_some() || shipped["stringData"].get(key).is_some(),
                    "{name}: the Secret {secret_name} has no {key}"
                );
            }
        }
        assert_eq!(
            deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"],
            deployment["spec"]["template"]["spec"]["securityContext"]["runAsGroup"],
            "{name}: the operator can read its mounted Secrets"
        );
        // The operator's account is bound to the Role in the job namespace.
        let job_namespace = settings["JOB_EXECUTOR_JOB_NAMESPACE"].as_str().unwrap();
        let role = find(&docs, "Role", None);
        let binding = find(&docs, "RoleBinding", None);
        assert_eq!(role["metadata"]["namespace"], job_namespace, "{name}");
        assert_eq!(binding["metadata"]["namespace"], job_namespace, "{name}");
        assert_eq!(
            binding["roleRef"]["name"], role["metadata"]["name"],
            "{name}"
        );
        assert_eq!(
            binding["subjects"],
            json!([{
                "kind": "ServiceAccount",
                "name": pod["serviceAccountName"],
                "namespace": deployment["metadata"]["namespace"],
            }]),
            "{name}"
        );
        find(&docs, "ServiceAccount", pod["serviceAccountName"].as_str());
        // The ClusterRoles for people are bound to nobody (checked below).
        assert!(
            !docs
                .iter()
                .any(|d| d["kind"] == "ClusterRoleBinding" || d["roleRef"]["kind"] == "ClusterRole"),
            "{name}: no cluster-wide RBAC for the operator"
        );
        // Task pods' default account: no token, no permissions, in the job namespace.
        let jobs_account = find(
            &docs,
            "ServiceAccount",
            settings["JOB_EXECUTOR_DEFAULT_SERVICE_ACCOUNT"].as_str(),
        );
        assert_eq!(
            jobs_account["automountServiceAccountToken"], false,
            "{name}"
        );
        assert_eq!(
            jobs_account["metadata"]["namespace"], job_namespace,
            "{name}"
        );
        // Probes, resources, security.
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/livez",
            "{name}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{name}"
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(container[probe]["httpGet"]["port"], "admin", "{name}");
        }
        let ports: Vec<(&str, i64)> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["containerPort"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ports, [("http", 8080), ("admin", 9090)], "{name}");
        assert_eq!(settings["JOB_EXECUTOR_LISTEN"], "0.0.0.0:8080", "{name}");
        assert_eq!(
            settings["JOB_EXECUTOR_ADMIN_LISTEN"], "0.0.0.0:9090",
            "{name}"
        );
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"]["requests"][resource].is_string(),
                "{name}"
            );
            assert!(
                container["resources"]["limits"][resource].is_string(),
                "{name}"
            );
        }
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["privileged"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        // The Service reaches both ports.
        let service = find(&docs, "Service", None);
        let targets: Vec<&Value> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["targetPort"])
            .collect();
        assert_eq!(targets, [&json!("http"), &json!("admin")], "{name}");
        assert_eq!(
            service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
            "{name}"
        );
    }
}

#[test]
fn full_values_reach_the_manifests() {
    let docs = documents(&render(&[FULL_VALUES]));
    let deployment = find(&docs, "Deployment", None);
    let pod = &deployment["spec"]["template"]["spec"];
    let settings = &find(&docs, "ConfigMap", None)["data"];
    let image = "registry.example.com/platform/job-executor@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(pod["containers"][0]["image"], image);
    assert_eq!(settings["JOB_EXECUTOR_INIT_IMAGE"], image);
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "registry-credentials"}])
    );
    // Task pods that stage files pull the same image: they get the same Secrets.
    assert_eq!(
        settings["JOB_EXECUTOR_INIT_IMAGE_PULL_SECRETS"],
        "registry-credentials"
    );
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert!(pod["affinity"]["nodeAffinity"].is_object());
    for (key, value) in [
        ("JOB_EXECUTOR_JOB_NAMESPACE", "keptn-jobs"),
        (
            "JOB_EXECUTOR_ALLOWED_IMAGES",
            "registry.example.com/*,alpine:3.*",
        ),
        ("JOB_EXECUTOR_ALLOW_PRIVILEGED", "true"),
        ("JOB_EXECUTOR_RUN_AS_USER", "1000"),
        ("JOB_EXECUTOR_FS_GROUP", "2000"),
        ("JOB_EXECUTOR_LOG_EXCERPT_BYTES", "131072"),
        ("JOB_EXECUTOR_NEVER_STARTED_TIMEOUT_SECONDS", "120"),
        ("JOB_EXECUTOR_JOBRUN_RETENTION_SECONDS", "86400"),
        ("JOB_EXECUTOR_KUBE_API_QPS", "50.5"),
        ("JOB_EXECUTOR_KUBE_API_BURST", "100"),
        ("JOB_EXECUTOR_KUBE_API_READ_TIMEOUT_SECONDS", "90"),
        ("JOB_EXECUTOR_MAX_BODY_BYTES", "2097152"),
        ("JOB_EXECUTOR_MAX_BODY_BYTES_IN_FLIGHT", "33554432"),
        ("JOB_EXECUTOR_MAX_BATCH_EVENTS", "20"),
        ("JOB_EXECUTOR_READ_TIMEOUT_SECONDS", "10"),
        ("JOB_EXECUTOR_MAX_CONNECTIONS", "256"),
        ("JOB_EXECUTOR_MAX_RUNS_IN_FLIGHT", "500"),
        ("JOB_EXECUTOR_SINK_MODE", "binary"),
        ("JOB_EXECUTOR_DEFAULT_SERVICE_ACCOUNT", "jx-task"),
        (
            "JOB_EXECUTOR_GIT_URL",
            "https://git.example.com/platform/keptn-config.git",
        ),
        (
            "JOB_EXECUTOR_GIT_LAYOUT",
            "main:{stage}/{service}/job/config.yaml,main:{stage}/job/config.yaml",
        ),
        ("JOB_EXECUTOR_GIT_FILES_FROM", "main:{stage}/{service}"),
        ("JOB_EXECUTOR_GIT_PIN_COMMITS", "false"),
        (
            "JOB_EXECUTOR_GIT_CREDENTIALS_DIR",
            "/etc/job-executor/git-credentials",
        ),
        ("JOB_EXECUTOR_JOB_LABELS", "cost-center=42,team=platform"),
        ("JOB_EXECUTOR_GIT_FETCH_INTERVAL_SECONDS", "30"),
        ("JOB_EXECUTOR_GIT_FETCH_TIMEOUT_SECONDS", "300"),
        ("JOB_EXECUTOR_GIT_FETCH_WAIT_SECONDS", "5"),
        ("JOB_EXECUTOR_LEASE_DURATION_SECONDS", "30"),
        ("JOB_EXECUTOR_LEASE_RENEW_DEADLINE_SECONDS", "20"),
        ("JOB_EXECUTOR_LEASE_RETRY_PERIOD_SECONDS", "2.5"),
        ("JOB_EXECUTOR_STORE_TIMEOUT_SECONDS", "10"),
        ("JOB_EXECUTOR_SHUTDOWN_DELAY_SECONDS", "3"),
        (
            "JOB_EXECUTOR_INGEST_HMAC_SECRET_FILE",
            "/etc/job-executor/ingest-hmac/secret",
        ),
        ("JOB_EXECUTOR_INGEST_HMAC_WINDOW_SECONDS", "60"),
    ] {
        assert_eq!(settings[key], value, "{key}");
    }
    // The signing secret: the named Secret's key, mounted where the setting says.
    let hmac = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "ingest-hmac")
        .expect("the ingest-hmac volume");
    assert_eq!(hmac["secret"]["secretName"], "job-executor-signing");
    assert_eq!(
        hmac["secret"]["items"],
        json!([{"key": "hmac", "path": "secret"}])
    );
    assert!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "ingest-hmac"
                && m["mountPath"] == "/etc/job-executor/ingest-hmac"
                && m["readOnly"] == true)
    );
    let mounts = &pod["containers"][0]["volumeMounts"];
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/job-executor/git-credentials" && m["readOnly"] == true)
    );
    // The Role and the jobs' NetworkPolicy go to the job namespace, the operator's to its own.
    assert_eq!(
        find(&docs, "Role", None)["metadata"]["namespace"],
        "keptn-jobs"
    );
    let jobs_policy = find(&docs, "NetworkPolicy", Some("jx-jobs"));
    assert_eq!(jobs_policy["metadata"]["namespace"], "keptn-jobs");
    // Everywhere, IPv4 and IPv6, each without the blocked CIDRs of its family.
    assert_eq!(
        jobs_policy["spec"]["egress"][1]["to"],
        json!([
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32", "10.0.0.0/8"]}},
            {"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}},
        ])
    );
    assert_eq!(jobs_policy["spec"]["ingress"], json!([]));
    // Pods are reached only through the CIDRs unless asked (Cilium matches no pod with one).
    assert!(
        !jobs_policy.to_string().contains("namespaceSelector\":{}"),
        "{jobs_policy}"
    );
    // Task pods are the ones the operator labels.
    assert_eq!(
        jobs_policy["spec"]["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/managed-by": "job-executor"})
    );
    // The ServiceMonitor (no upstream schema: checked here) scrapes the Service's metrics port.
    let monitor = find(&docs, "ServiceMonitor", None);
    let service = find(&docs, "Service", None);
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["scrapeTimeout"], "10s", "{endpoint}");
    assert_eq!(
        endpoint["relabelings"][0]["targetLabel"], "cluster",
        "{endpoint}"
    );
    assert_eq!(
        endpoint["metricRelabelings"][0]["action"], "drop",
        "{endpoint}"
    );
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics")
    );
    // It selects Services by their labels: every label it asks for is one the Service has.
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    assert!(!wanted.is_empty());
    for (key, value) in wanted {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the ServiceMonitor selects {key}={value}; the Service's labels: {}",
            service["metadata"]["labels"]
        );
    }
}

/// Notifications: the Secret of the targets' URLs mounted as a directory (JOB_EXECUTOR_NOTIFY_DIR,
/// never the URLs in the ConfigMap), the installation's targets as `--notify` reads them, and
/// egress to them through the NetworkPolicy; nothing of it when no Secret is named.
#[test]
fn chart_wires_notifications() {
    let yaml = render(&[FULL_VALUES, NOTIFICATIONS_VALUES]);
    validate_manifests("notifications", &yaml);
    let docs = documents(&yaml);
    let pod = &find(&docs, "Deployment", None)["spec"]["template"]["spec"];
    let settings = &find(&docs, "ConfigMap", Some("jx"))["data"];
    for (key, value) in [
        ("JOB_EXECUTOR_NOTIFY_DIR", "/etc/job-executor/notify"),
        (
            "JOB_EXECUTOR_NOTIFY",
            "slack:ops:failed;webhook:audit:started,succeeded,failed",
        ),
        ("JOB_EXECUTOR_NOTIFY_TIMEOUT_SECONDS", "5"),
        ("JOB_EXECUTOR_NOTIFY_RETRIES", "3"),
    ] {
        assert_eq!(settings[key], value, "{key}");
    }
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/job-executor/notify")
        .expect("the notifications Secret is mounted");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    // The whole Secret: a file per target.
    assert_eq!(
        volume["secret"],
        json!({"secretName": "hooks", "defaultMode": 0o440})
    );
    let egress = &find(&docs, "NetworkPolicy", Some("jx"))["spec"]["egress"];
    assert!(
        egress.as_array().unwrap().contains(&json!({
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
            "ports": [{"port": 443, "protocol": "TCP"}],
        })),
        "no egress to notifications: {egress}"
    );
    // The API server, the sink, git, NATS: addresses, and pods (which some CNIs match with no
    // CIDR).
    let main = egress
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["ports"][1] == json!({"port": 8080, "protocol": "TCP"}))
        .unwrap();
    assert_eq!(main["to"][0], json!({"namespaceSelector": {}}), "{egress}");
    assert_eq!(
        main["to"][1],
        json!({"ipBlock": {"cidr": "10.0.0.0/8"}}),
        "{egress}"
    );
    // Kept from other pods when the CIDRs say where it goes.
    let dir = tempdir("no-pods");
    let file = dir.join("values.yaml");
    std::fs::write(
        &file,
        "networkPolicy:\n  operator:\n    egressToPods: false\n",
    )
    .unwrap();
    let docs = documents(&render(&[FULL_VALUES, file.to_str().unwrap()]));
    let egress = &find(&docs, "NetworkPolicy", Some("jx"))["spec"]["egress"];
    assert!(
        !egress.to_string().contains("namespaceSelector\":{}"),
        "{egress}"
    );
    // Task pods reach every pod when asked, beside the CIDRs.
    std::fs::write(&file, "networkPolicy:\n  jobs:\n    egressToPods: true\n").unwrap();
    let yaml = render(&[FULL_VALUES, file.to_str().unwrap()]);
    validate_manifests("jobs-to-pods", &yaml);
    let docs = documents(&yaml);
    let to = &find(&docs, "NetworkPolicy", Some("jx-jobs"))["spec"]["egress"][1]["to"];
    assert_eq!(to[0], json!({"namespaceSelector": {}}), "{to}");
    assert_eq!(to[1]["ipBlock"]["cidr"], "0.0.0.0/0", "{to}");

    for (name, yaml) in renderings() {
        let docs = documents(&yaml);
        let settings = &find(&docs, "ConfigMap", None)["data"];
        assert!(
            settings
                .as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("JOB_EXECUTOR_NOTIFY")),
            "{name}: notifications are off by default"
        );
        let deployment = find(&docs, "Deployment", None);
        assert!(
            deployment["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["name"] != "notify"),
            "{name}"
        );
        // The operator's policy: DNS, and the API server, sink and git.
        let policy = docs.iter().find(|d| {
            d["kind"] == "NetworkPolicy" && d["metadata"]["name"] == deployment["metadata"]["name"]
        });
        if let Some(policy) = policy {
            assert_eq!(
                policy["spec"]["egress"].as_array().unwrap().len(),
                2,
                "{name}"
            );
        }
    }
}

#[test]
fn the_role_is_the_same_whatever_the_values() {
    // Only the Lease's name follows the release's name.
    let unnamed = |docs: &[Value]| -> Value {
        let mut rules = find(docs, "Role", None)["rules"].clone();
        for rule in rules.as_array_mut().unwrap() {
            rule.as_object_mut().unwrap().remove("resourceNames");
        }
        rules
    };
    let rules: Vec<Value> = renderings()
        .iter()
        .map(|(_, yaml)| unnamed(&documents(yaml)))
        .collect();
    assert!(rules.windows(2).all(|w| w[0] == w[1]), "{rules:#?}");
    let deploy = documents(&read("deploy/service.yaml"));
    assert_eq!(unnamed(&deploy), rules[0]);
}

#[test]
fn notes_tell_how_to_send_a_test_event() {
    let output = Command::new(python())
        .args(["tests/install/helm.py", "render", CHART, "--notes"])
        .current_dir(root())
        .output()
        .unwrap();
    let notes = String::from_utf8_lossy(&output.stderr);
    assert!(
        notes.contains("job-executor send test-events/test.triggered.json --to http://localhost:8080/ --token \"$TOKEN\""),
        "{notes}"
    );
    assert!(notes.contains("get jobruns"), "{notes}");
    // A key with a dot is escaped in the JSONPath, as kubectl reads it.
    let dir = tempdir("notes-key");
    let file = dir.join("values.yaml");
    std::fs::write(&file, "ingest:\n  token: {key: ingest.token}\n").unwrap();
    let output = Command::new(python())
        .args(["tests/install/helm.py", "render", CHART, "--notes", "-f"])
        .arg(&file)
        .current_dir(root())
        .output()
        .unwrap();
    let notes = String::from_utf8_lossy(&output.stderr);
    assert!(
        notes.contains("-o jsonpath='{.data.ingest\\.token}'"),
        "{notes}"
    );
}

/// Several replicas with one leader: every replica receives events, updates roll (a new pod
/// before an old one goes), drains keep one, replicas spread over nodes, each replica named
/// after its pod in the Lease this installation's Role lets it renew.
#[test]
fn chart_runs_replicas_with_one_leader() {
    for (name, yaml) in renderings() {
        let docs = documents(&yaml);
        let deployment = find(&docs, "Deployment", None);
        let spec = &deployment["spec"];
        let pod = &spec["template"]["spec"];
        let selector = &spec["selector"]["matchLabels"];
        let replicas = spec["replicas"].as_i64().unwrap();
        assert_eq!(spec["strategy"]["type"], "RollingUpdate", "{name}");
        assert_eq!(
            spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{name}"
        );
        let budgets: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "PodDisruptionBudget")
            .collect();
        if replicas > 1 {
            assert_eq!(budgets.len(), 1, "{name}");
            assert_eq!(budgets[0]["spec"]["minAvailable"], 1, "{name}");
            assert_eq!(
                &budgets[0]["spec"]["selector"]["matchLabels"], selector,
                "{name}"
            );
        } else {
            assert!(
                budgets.is_empty(),
                "{name}: a budget for {replicas} replica(s)"
            );
        }
        let env = env_of(&pod["containers"][0]);
        let identity = env
            .iter()
            .find(|(n, _)| n == "JOB_EXECUTOR_IDENTITY")
            .unwrap_or_else(|| panic!("{name}: no identity"));
        assert_eq!(
            identity.1["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
            "{name}"
        );
        let lease = find(&docs, "ConfigMap", None)["data"]["JOB_EXECUTOR_LEASE_NAME"].clone();
        let role = find(&docs, "Role", None);
        let named: Vec<&Value> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rule| rule["resources"] == json!(["leases"]))
            .collect();
        assert_eq!(named.len(), 2, "{name}: {named:?}");
        assert_eq!(named[0]["verbs"], json!(["create"]), "{name}");
        assert_eq!(named[1]["verbs"], json!(["get", "update"]), "{name}");
        assert_eq!(named[1]["resourceNames"], json!([lease]), "{name}");
    }
    let docs = documents(&render(&[]));
    let pod = &find(&docs, "Deployment", None)["spec"]["template"]["spec"];
    let spread =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        spread["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        find(&docs, "Deployment", None)["spec"]["replicas"],
        2,
        "two replicas by default"
    );
}

/// promtool, unpacked from Debian's prometheus package by `scripts/setup-tools`.
fn promtool() -> std::path::PathBuf {
    crate::common::installed_tool("PROMTOOL", ".venv/prometheus/usr/bin/promtool")
}

fn run_promtool(args: &[&str], dir: &std::path::Path) -> String {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// A series for promtool: a name with labels, and its values (`0+2x60`: from 0, up 2 a minute,
/// for an hour).
fn series(name: &str, values: &str) -> Value {
    json!({"series": name, "values": values})
}

/// The chart's alerts are valid PromQL (promtool checks the rules as rendered), and each fires
/// when what it says happens and stays quiet otherwise (promtool's rule unit tests, on series
/// named as the operator exports them); the dashboard is valid JSON whose panels each query.
/// That every metric they read is one the operator exports is checked in `src/metrics.rs`.
#[test]
fn the_alerts_fire_when_they_should_and_the_dashboard_is_shipped() {
    let yaml = render(&[FULL_VALUES, "charts/job-executor/ci/dashboard-values.yaml"]);
    validate_manifests("monitoring", &yaml);
    let docs = documents(&yaml);
    let rule = find(&docs, "PrometheusRule", None);
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let rules = &rule["spec"]["groups"][0]["rules"];
    let alerts: Vec<&Value> = rules.as_array().unwrap().iter().collect();
    let names: Vec<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "JobExecutorRunsFailing",
            "JobExecutorDeliveriesGivingUp",
            "JobExecutorReconcileErrors",
            "JobExecutorNoLeader",
            "JobExecutorDown"
        ]
    );
    let dir = tempdir("alerts");
    std::fs::write(
        dir.join("rules.yaml"),
        json!({"groups": rule["spec"]["groups"]}).to_string(),
    )
    .unwrap();
    let checked = run_promtool(&["check", "rules", "rules.yaml"], &dir);
    assert!(checked.contains("SUCCESS: 5 rules found"), "{checked}");

    // Each alert as it would fire: its labels and annotations as the rule gives them, and the
    // release's namespace, which each reads alone.
    let firing = |name: &str| {
        let alert = alerts.iter().find(|a| a["alert"] == name).unwrap();
        let mut labels = alert["labels"].clone();
        labels["namespace"] = json!("job-executor");
        json!([{"exp_labels": labels, "exp_annotations": alert["annotations"]}])
    };
    let quiet = |at: &str| -> Vec<Value> {
        names
            .iter()
            .map(|name| json!({"eval_time": at, "alertname": name, "exp_alerts": []}))
            .collect()
    };
    let failing = json!({
        "interval": "1m",
        "input_series": [
            series("job_executor_runs_finished_total{namespace=\"job-executor\",phase=\"Failed\"}", "0+2x60"),
            series("job_executor_runs_finished_total{namespace=\"job-executor\",phase=\"Succeeded\"}", "0+1x60"),
            series("job_executor_event_deliveries_total{namespace=\"job-executor\",kind=\"finished\",outcome=\"gave_up\"}", "0x10 1x50"),
            series("job_executor_reconcile_errors_total{namespace=\"job-executor\",category=\"api_server\"}", "0+30x60"),
            series("job_executor_leader{namespace=\"job-executor\",pod=\"a\"}", "0x60"),
            // Another installation, healthy, hides none of it.
            series("job_executor_runs_finished_total{namespace=\"other\",phase=\"Succeeded\"}", "0+50x60"),
            series("job_executor_leader{namespace=\"other\",pod=\"c\"}", "1x60"),
        ],
        "alert_rule_test": [
            {"eval_time": "40m", "alertname": "JobExecutorRunsFailing", "exp_alerts": firing("JobExecutorRunsFailing")},
            {"eval_time": "20m", "alertname": "JobExecutorDeliveriesGivingUp", "exp_alerts": firing("JobExecutorDeliveriesGivingUp")},
            {"eval_time": "40m", "alertname": "JobExecutorDeliveriesGivingUp", "exp_alerts": []},
            {"eval_time": "40m", "alertname": "JobExecutorReconcileErrors", "exp_alerts": firing("JobExecutorReconcileErrors")},
            {"eval_time": "40m", "alertname": "JobExecutorNoLeader", "exp_alerts": firing("JobExecutorNoLeader")},
            {"eval_time": "40m", "alertname": "JobExecutorDown", "exp_alerts": []},
        ],
    });
    // Runs succeed, a replica leads, and the only errors are a follower's refused steps.
    let healthy = json!({
        "interval": "1m",
        "input_series": [
            series("job_executor_runs_finished_total{namespace=\"job-executor\",phase=\"Failed\"}", "0x60"),
            series("job_executor_runs_finished_total{namespace=\"job-executor\",phase=\"Succeeded\"}", "0+5x60"),
            series("job_executor_event_deliveries_total{namespace=\"job-executor\",kind=\"finished\",outcome=\"delivered\"}", "0+5x60"),
            series("job_executor_reconcile_errors_total{namespace=\"job-executor\",category=\"not_leader\"}", "0+30x60"),
            series("job_executor_leader{namespace=\"job-executor\",pod=\"a\"}", "1x60"),
            series("job_executor_leader{namespace=\"job-executor\",pod=\"b\"}", "0x60"),
            // Another installation, failing, raises nothing here.
            series("job_executor_runs_finished_total{namespace=\"other\",phase=\"Failed\"}", "0+9x60"),
            series("job_executor_event_deliveries_total{namespace=\"other\",kind=\"finished\",outcome=\"gave_up\"}", "0+1x60"),
            series("job_executor_reconcile_errors_total{namespace=\"other\",category=\"api_server\"}", "0+30x60"),
            series("job_executor_leader{namespace=\"other\",pod=\"c\"}", "0x60"),
        ],
        "alert_rule_test": quiet("40m"),
    });
    let mut gone_tests = quiet("10m");
    gone_tests.retain(|t| t["alertname"] != "JobExecutorDown");
    gone_tests.push(json!({"eval_time": "10m", "alertname": "JobExecutorDown", "exp_alerts": [{"exp_labels": {"severity": "critical", "namespace": "job-executor"}, "exp_annotations": alerts[4]["annotations"]}]}));
    // Gone, while another installation is scraped and leads.
    let gone = json!({
        "interval": "1m",
        "input_series": [
            series("up{job=\"other\"}", "1x60"),
            series("job_executor_leader{namespace=\"other\",pod=\"c\"}", "1x60"),
        ],
        "alert_rule_test": gone_tests,
    });
    std::fs::write(
        dir.join("tests.yaml"),
        json!({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [failing, healthy, gone]})
            .to_string(),
    )
    .unwrap();
    let tested = run_promtool(&["test", "rules", "tests.yaml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    std::fs::remove_dir_all(dir).unwrap();

    // The dashboard: a ConfigMap Grafana's sidecar finds, holding the JSON of the file.
    let dashboard = find(&docs, "ConfigMap", Some("jx-dashboard"));
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json_text = dashboard["data"]["job-executor.json"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(
        parsed,
        serde_json::from_str::<Value>(&read("charts/job-executor/dashboards/job-executor.json"))
            .unwrap()
    );
    assert!(
        parsed["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "namespace"),
        "a variable choosing the installations"
    );
    let panels = parsed["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "{}", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(
            !targets.is_empty()
                && targets.iter().all(|t| t["expr"].as_str().is_some_and(|e| {
                    // Every series read is narrowed to the installations chosen.
                    e.contains("job_executor_")
                        && e.matches("job_executor_").count()
                            == e.matches("{namespace=~\"$namespace\"}").count()
                })),
            "{panel}"
        );
    }
    // Off by default.
    let defaults = documents(&render(&[]));
    assert!(defaults.iter().all(|d| d["kind"] != "PrometheusRule"));
    assert!(defaults.iter().all(|d| {
        !d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .ends_with("-dashboard")
    }));
}

/// Values that mean "none": no jobs ServiceAccount made or named leaves task pods on their
/// namespace's `default` (no setting naming an account that does not exist); empty egress lists
/// allow no connection but DNS (an empty `to` or `ports` would allow every one).
#[test]
fn values_that_mean_none_render_none() {
    let dir = tempdir("none-values");
    let file = dir.join("values.yaml");
    std::fs::write(
        &file,
        "jobServiceAccount: {create: false}\nnotifications:\n  secret: hooks\n  targets: [{slack: ops}]\nnetworkPolicy:\n  enabled: true\n  operator:\n    egressCIDRs: []\n    notificationEgressPorts: []\n",
    )
    .unwrap();
    let yaml = render(&[file.to_str().unwrap()]);
    validate_manifests("none-values", &yaml);
    let docs = documents(&yaml);
    let settings = &find(&docs, "ConfigMap", None)["data"];
    assert!(
        settings
            .get("JOB_EXECUTOR_DEFAULT_SERVICE_ACCOUNT")
            .is_none(),
        "{settings}"
    );
    assert!(
        docs.iter().all(|d| d["kind"] != "ServiceAccount"
            || !d["metadata"]["name"].as_str().unwrap().ends_with("-jobs")),
        "no jobs ServiceAccount"
    );
    let deployment = find(&docs, "Deployment", None);
    let policy = docs
        .iter()
        .find(|d| {
            d["kind"] == "NetworkPolicy" && d["metadata"]["name"] == deployment["metadata"]["name"]
        })
        .unwrap();
    assert_eq!(
        policy["spec"]["egress"],
        json!([{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]),
        "DNS only"
    );

    std::fs::write(
        &file,
        "jobServiceAccount: {create: false, name: runner}\naggregateToDefaultRoles: false\n",
    )
    .unwrap();
    let docs = documents(&render(&[file.to_str().unwrap()]));
    assert_eq!(
        find(&docs, "ConfigMap", None)["data"]["JOB_EXECUTOR_DEFAULT_SERVICE_ACCOUNT"],
        "runner"
    );
    assert!(
        docs.iter().all(|d| d["kind"] != "ClusterRole"),
        "no ClusterRole"
    );

    // The dashboard without its sidecar label: the chart's labels alone.
    std::fs::write(
        &file,
        "grafanaDashboard:\n  enabled: true\n  labels: {grafana_dashboard: null}\n",
    )
    .unwrap();
    let yaml = render(&[file.to_str().unwrap()]);
    validate_manifests("no-dashboard-labels", &yaml);
    let docs = documents(&yaml);
    let labels = &find(&docs, "ConfigMap", Some("job-executor-dashboard"))["metadata"]["labels"];
    assert!(labels.get("grafana_dashboard").is_none(), "{labels}");
    assert_eq!(labels["app.kubernetes.io/name"], "job-executor");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The ClusterRoles for people (docs/install.md, Permissions): the resources of
/// job-executor.dev only, no subresource (status is the operator's), folded into the built-in
/// roles, and bound to nobody by the chart (the operator has its Role alone).
#[test]
fn the_aggregated_cluster_roles_add_only_runs_and_schedules_to_the_built_in_roles() {
    for (name, yaml) in renderings() {
        let docs = documents(&yaml);
        let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ClusterRole").collect();
        assert_eq!(roles.len(), 2, "{name}");
        for role in roles {
            let labels = &role["metadata"]["labels"];
            for built_in in ["edit", "admin"] {
                let label = format!("rbac.authorization.k8s.io/aggregate-to-{built_in}");
                assert_eq!(labels[&label], "true", "{name}: {role}");
            }
            for rule in role["rules"].as_array().unwrap() {
                assert_eq!(rule["apiGroups"], json!(["job-executor.dev"]), "{name}");
                let resources = rule["resources"].as_array().unwrap();
                assert!(
                    resources.iter().all(|r| !r.as_str().unwrap().contains('/')),
                    "{name}: {rule}"
                );
                let verbs = rule["verbs"].as_array().unwrap();
                assert!(
                    !(resources.contains(&json!("jobruns")) && verbs.contains(&json!("create"))),
                    "runs are made by ingest: {rule}"
                );
            }
        }
        assert!(
            docs.iter().all(|d| d["kind"] != "ClusterRoleBinding"
                && d["roleRef"]["kind"] != "ClusterRole"),
            "{name}"
        );
    }
}

/// Whether a label selector (`matchLabels` and `matchExpressions`) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let expressions = selector["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    wanted.iter().all(|(key, value)| &labels[key] == value)
        && expressions.iter().all(|e| {
            let key = e["key"].as_str().unwrap();
            let values = e["values"].as_array().cloned().unwrap_or_default();
            match e["operator"].as_str().unwrap() {
                "Exists" => labels.get(key).is_some(),
                "DoesNotExist" => labels.get(key).is_none(),
                "In" => values.contains(&labels[key]),
                "NotIn" => !values.contains(&labels[key]),
                other => panic!("operator {other}"),
            }
        })
}

/// The jobs' NetworkPolicy (no ingress, egress anywhere but the blocked CIDRs) selects the
/// task pods the operator renders and never the operator's own pod, whatever `managedBy` says:
/// with `managedBy: job-executor` the operator's pod carries the tasks' managed-by label too.
#[test]
fn the_jobs_network_policy_selects_task_pods_not_the_operator() {
    let rendered = Command::new(crate::common::BIN)
        .args([
            "render",
            "--event",
            "test-events/test.triggered.json",
            "--config",
            "examples/carts/job/config.yaml",
            "--format",
            "json",
        ])
        .current_dir(root())
        .env_remove("JOB_EXECUTOR_ALLOWED_IMAGES")
        .env_remove("JOB_EXECUTOR_JOB_NAMESPACE")
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{rendered:?}");
    let rendered: Value = serde_json::from_slice(&rendered.stdout).unwrap();
    let task_pods: Vec<&Value> = rendered["matched"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|run| run["jobs"].as_array().unwrap())
        .map(|job| &job["spec"]["template"]["metadata"]["labels"])
        .collect();
    assert!(!task_pods.is_empty());

    let dir = tempdir("managed-by");
    let file = dir.join("values.yaml");
    for managed_by in ["", "job-executor", "argocd"] {
        std::fs::write(
            &file,
            format!("managedBy: {managed_by:?}\nnetworkPolicy: {{enabled: true}}\n"),
        )
        .unwrap();
        let docs = documents(&render(&[file.to_str().unwrap()]));
        let selector =
            &find(&docs, "NetworkPolicy", Some("job-executor-jobs"))["spec"]["podSelector"];
        let operator = &find(&docs, "Deployment", None)["spec"]["template"]["metadata"]["labels"];
        assert!(
            !selects(selector, operator),
            "managedBy {managed_by:?}: {operator}"
        );
        for labels in &task_pods {
            assert!(
                selects(selector, labels),
                "managedBy {managed_by:?}: {labels}"
            );
        }
    }
}

/// No task runs as the operator's ServiceAccount where Jobs run beside the operator: its token
/// may create Jobs and read every task's logs. In a namespace of their own, the name is another
/// account's.
#[test]
fn tasks_are_kept_from_the_operators_service_account_in_its_namespace() {
    let docs = documents(&render(&[]));
    assert_eq!(
        find(&docs, "ConfigMap", None)["data"]["JOB_EXECUTOR_REFUSED_SERVICE_ACCOUNTS"],
        find(&docs, "ServiceAccount", Some("job-executor"))["metadata"]["name"]
    );
    let dir = tempdir("refused-accounts");
    let file = dir.join("values.yaml");
    std::fs::write(&file, "jobNamespace: keptn-jobs\n").unwrap();
    let docs = documents(&render(&[file.to_str().unwrap()]));
    assert!(
        find(&docs, "ConfigMap", None)["data"]
            .get("JOB_EXECUTOR_REFUSED_SERVICE_ACCOUNTS")
            .is_none()
    );
    // Named otherwise, and in the release namespace named explicitly: the same.
    std::fs::write(
        &file,
        "jobNamespace: job-executor\nserviceAccount: {name: operator}\n",
    )
    .unwrap();
    let docs = documents(&render(&[file.to_str().unwrap()]));
    assert_eq!(
        find(&docs, "ConfigMap", None)["data"]["JOB_EXECUTOR_REFUSED_SERVICE_ACCOUNTS"],
        "operator"
    );
}

/// No task reads the operator's Secrets where Jobs run beside the operator: each Secret the
/// Deployment reads (but the sink's CA, which is no secret) is refused, once. In a namespace of
/// their own, tasks may name any Secret of it but the pull secrets. Helm's release records,
/// which hold every value rendered (the generated token too), are refused wherever Jobs run.
#[test]
fn tasks_are_kept_from_the_operators_secrets_in_its_namespace() {
    let refused_of = |docs: &[Value]| -> Option<Vec<String>> {
        let data = &find(docs, "ConfigMap", None)["data"];
        let listed = data.get("JOB_EXECUTOR_REFUSED_SECRETS")?.as_str().unwrap();
        Some(listed.split(',').map(str::to_string).collect())
    };
    let helm = "sh.helm.release.v1.*".to_string();
    let docs = documents(&render(&[]));
    assert_eq!(
        refused_of(&docs),
        Some(vec!["job-executor-ingest".to_string(), helm.clone()])
    );

    let dir = tempdir("refused-secrets");
    let file = dir.join("values.yaml");
    std::fs::write(
        &file,
        "jobNamespace: job-executor\nnotifications: {secret: keptn-config-git}\n\
         envFrom: [{secretRef: {name: job-executor-local, optional: true}}]\n\
         sink: {urlSecret: {name: sink-url}}\n",
    )
    .unwrap();
    let docs = documents(&render(&[FULL_VALUES, file.to_str().unwrap()]));
    let refused = refused_of(&docs).expect("refused where Jobs run beside the operator");
    let pod = &find(&docs, "Deployment", None)["spec"]["template"]["spec"];
    let ca = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == "sink-ca")
        .map(|volume| volume["secret"]["secretName"].clone());
    let mut read: Vec<String> = Vec::new();
    let mut note = |name: &Value| {
        let name = name.as_str().unwrap().to_string();
        if Some(Value::String(name.clone())) != ca && !read.contains(&name) {
            read.push(name);
        }
    };
    for volume in pod["volumes"].as_array().unwrap() {
        if volume["secret"].is_object() {
            note(&volume["secret"]["secretName"]);
        }
    }
    let container = &pod["containers"][0];
    for source in container["envFrom"].as_array().unwrap() {
        if source["secretRef"].is_object() {
            note(&source["secretRef"]["name"]);
        }
    }
    for var in container["env"].as_array().unwrap() {
        if var["valueFrom"]["secretKeyRef"].is_object() {
            note(&var["valueFrom"]["secretKeyRef"]["name"]);
        }
    }
    for pull in pod["imagePullSecrets"].as_array().unwrap() {
        note(&pull["name"]);
    }
    read.push(helm.clone());
    let (mut refused_sorted, mut read_sorted) = (refused.clone(), read.clone());
    refused_sorted.sort();
    read_sorted.sort();
    assert_eq!(refused_sorted, read_sorted, "refused {refused:?}");
    assert_eq!(read.len(), 9, "{read:?}");
    refused_sorted.dedup();
    assert_eq!(
        refused_sorted.len(),
        refused.len(),
        "each once: {refused:?}"
    );

    // Named but not mounted (no git URL, no dead-letter URL): not the operator's to keep.
    std::fs::write(
        &file,
        "configSource: {git: {credentialsSecret: git-creds}}\n\
         sink: {deadLetter: {headersSecret: {name: dl-token}}}\n",
    )
    .unwrap();
    let docs = documents(&render(&[file.to_str().unwrap()]));
    assert_eq!(
        refused_of(&docs),
        Some(vec!["job-executor-ingest".to_string(), helm.clone()])
    );

    std::fs::write(
        &file,
        "jobNamespace: keptn-jobs\nimagePullSecrets: [registry-credentials]\n",
    )
    .unwrap();
    let docs = documents(&render(&[file.to_str().unwrap()]));
    assert_eq!(
        refused_of(&docs),
        Some(vec!["registry-credentials".to_string(), helm])
    );
}

/// URLs with credentials from Secrets: neither is in the ConfigMap, the container takes each
/// from its Secret, NATS is on, and the notes do not print the sink's URL.
#[test]
fn urls_with_credentials_come_from_secrets() {
    let dir = tempdir("url-secrets");
    let file = dir.join("values.yaml");
    std::fs::write(
        &file,
        "sink:\n  url: nats://placeholder:4222\n  urlSecret: {name: keptn-nats, key: sink}\n\
         nats:\n  urlSecret: {name: keptn-nats, key: source}\n",
    )
    .unwrap();
    let values = file.to_str().unwrap();
    let yaml = render(&[values]);
    validate_manifests("URLs from Secrets", &yaml);
    let docs = documents(&yaml);
    let data = &find(&docs, "ConfigMap", None)["data"];
    assert!(data.get("JOB_EXECUTOR_SINK_URL").is_none(), "{data}");
    assert!(data.get("JOB_EXECUTOR_NATS_URL").is_none(), "{data}");
    assert_eq!(data["JOB_EXECUTOR_NATS_STREAM"], "keptn", "NATS is on");
    let deployment = find(&docs, "Deployment", None);
    let env = env_of(&deployment["spec"]["template"]["spec"]["containers"][0]);
    for (name, key) in [
        ("JOB_EXECUTOR_SINK_URL", "sink"),
        ("JOB_EXECUTOR_NATS_URL", "source"),
    ] {
        let (_, entry) = env.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(
            entry["valueFrom"]["secretKeyRef"],
            json!({"name": "keptn-nats", "key": key}),
            "{name}"
        );
    }
    let output = Command::new(python())
        .args([
            "tests/install/helm.py",
            "render",
            CHART,
            "-f",
            values,
            "--notes",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    let notes = String::from_utf8_lossy(&output.stderr);
    assert!(
        notes.contains("\n\nEvents go to: the URL in Secret keptn-nats (key sink)\n"),
        "{notes}"
    );
    assert!(!notes.contains("placeholder"), "{notes}");

    // The URL is not used then: it may be left empty.
    std::fs::write(
        &file,
        "sink:\n  url: \"\"\n  urlSecret: {name: keptn-api}\n",
    )
    .unwrap();
    let yaml = render(&[values]);
    let docs = documents(&yaml);
    assert!(
        find(&docs, "ConfigMap", None)["data"]
            .get("JOB_EXECUTOR_SINK_URL")
            .is_none()
    );
}

/// A Service that takes events from outside the cluster does not take the admin port with it:
/// that one moves to a ClusterIP Service of its own, which the ServiceMonitor still finds.
#[test]
fn an_exposed_service_leaves_the_admin_port_inside() {
    let dir = tempdir("exposed");
    let file = dir.join("values.yaml");
    std::fs::write(
        &file,
        "service: {type: LoadBalancer}\nserviceMonitor: {enabled: true}\n",
    )
    .unwrap();
    let yaml = render(&[file.to_str().unwrap()]);
    validate_manifests("an exposed Service", &yaml);
    let docs = documents(&yaml);
    let ports = |service: &Value| -> Vec<String> {
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let exposed = find(&docs, "Service", Some("job-executor"));
    assert_eq!(exposed["spec"]["type"], "LoadBalancer");
    assert_eq!(ports(exposed), ["http"]);
    let admin = find(&docs, "Service", Some("job-executor-admin"));
    assert_eq!(admin["spec"]["type"], "ClusterIP");
    assert_eq!(ports(admin), ["metrics"]);
    let monitor = find(&docs, "ServiceMonitor", None);
    assert!(selects(
        &monitor["spec"]["selector"],
        &admin["metadata"]["labels"]
    ));
    // By default one Service carries both.
    let docs = documents(&render(&[]));
    assert_eq!(
        ports(find(&docs, "Service", Some("job-executor"))),
        ["http", "metrics"]
    );
}

/// An existing ServiceAccount for the operator: none is made, the Deployment runs as it and
/// the RoleBinding grants it the Role.
#[test]
fn an_existing_service_account_is_used_as_it_is() {
    let dir = tempdir("existing-account");
    let file = dir.join("values.yaml");
    std::fs::write(
        &file,
        "serviceAccount: {create: false, name: made-by-terraform}\n",
    )
    .unwrap();
    let yaml = render(&[file.to_str().unwrap()]);
    validate_manifests("an existing ServiceAccount", &yaml);
    let docs = documents(&yaml);
    let accounts: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        accounts,
        ["job-executor-jobs"],
        "only the tasks' one is made"
    );
    assert_eq!(
        find(&docs, "Deployment", None)["spec"]["template"]["spec"]["serviceAccountName"],
        "made-by-terraform"
    );
    assert_eq!(
        find(&docs, "RoleBinding", None)["subjects"][0]["name"],
        "made-by-terraform"
    );
}

/// Helm's longest release name (53 characters): the names with a suffix stay distinct from the
/// release's base name (the tasks' ServiceAccount is not the operator's, the two
/// NetworkPolicies are two), and everything validates.
#[test]
fn the_longest_release_name_keeps_every_name_apart() {
    let name = "a".repeat(53);
    let dir = tempdir("long-name");
    let file = dir.join("values.yaml");
    std::fs::write(&file, "networkPolicy: {enabled: true}\n").unwrap();
    let yaml = helm(&[
        "render",
        CHART,
        "-f",
        file.to_str().unwrap(),
        "--name",
        &name,
    ]);
    validate_manifests("a 53-character release name", &yaml);
    let docs = documents(&yaml);
    for kind in ["ServiceAccount", "NetworkPolicy"] {
        let names: Vec<&str> = docs
            .iter()
            .filter(|d| d["kind"] == kind)
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{kind}: {names:?}");
        assert!(names.iter().all(|n| n.len() <= 63), "{kind}: {names:?}");
    }
}

/// The `/tmp` volume the git clone lives in has room for the clone's limit, whatever it is set
/// to (a limit past the volume would have the pod evicted instead of the fetch stopped).
#[test]
fn the_tmp_volume_has_room_for_the_clone() {
    let size_limit = |docs: &[Value]| {
        find(docs, "Deployment", None)["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "tmp")
            .map(|v| v["emptyDir"]["sizeLimit"].clone())
            .unwrap()
    };
    let docs = documents(&render(&[]));
    assert_eq!(size_limit(&docs), json!(256 << 20), "256Mi by default");
    let dir = tempdir("clone-room");
    let file = dir.join("values.yaml");
    std::fs::write(
        &file,
        "configSource:\n  git:\n    url: https://git.example.com/keptn.git\n    maxRepositoryBytes: 1073741824\n",
    )
    .unwrap();
    let docs = documents(&render(&[file.to_str().unwrap()]));
    assert_eq!(size_limit(&docs), json!((1u64 << 30) + (56 << 20)));
    assert_eq!(
        find(&docs, "ConfigMap", None)["data"]["JOB_EXECUTOR_GIT_MAX_REPOSITORY_BYTES"],
        "1073741824"
    );
}

/// Values read as other YAML types when unquoted (a label `true`, a path with ` #`) are
/// written as the strings they are.
#[test]
fn string_values_stay_strings() {
    let dir = tempdir("string-values");
    let file = dir.join("values.yaml");
    std::fs::write(
        &file,
        "managedBy: \"true\"\nconfigSource:\n  directory: {path: \"/cfg #1\", volume: {configMap: {name: configs}}}\npriorityClassName: \"012\"\n",
    )
    .unwrap();
    let yaml = render(&[file.to_str().unwrap()]);
    validate_manifests("string-values", &yaml);
    let docs = documents(&yaml);
    let deployment = find(&docs, "Deployment", None);
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "true"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "012");
    assert!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/cfg #1"),
        "{pod}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
