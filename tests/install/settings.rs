//! The Deployment's arguments and environment, resolved as the kubelet would (ConfigMap
//! `envFrom`, Secret `secretKeyRef`), are accepted by `job-executor run`'s real parser: the
//! child process `job-executor check-run` parses them with the same `RunArgs` and builds the
//! settings and the sink as `run` does, without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use clap::CommandFactory;
use job_executor::cli::Cli;
use serde_json::{Value, json};

use crate::chart::renderings;
use crate::common::{
    BIN, FULL_VALUES, NOTIFICATIONS_VALUES, documents, find, read, render, tempdir,
};

/// The environment variables `job-executor run` reads, each with its flag (not the hidden,
/// test-only ones).
fn run_env_flags() -> BTreeMap<String, String> {
    let cli = Cli::command();
    let run = cli.find_subcommand("run").unwrap();
    run.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some((env, format!("--{}", a.get_long()?)))
        })
        .collect()
}

/// `check-run`'s table: flag → (value, source). Columns are separated by at least two spaces.
fn settings_table(stdout: &str) -> BTreeMap<String, (String, String)> {
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("SETTING "), "{stdout}");
    lines
        .take_while(|line| !line.starts_with("ok: "))
        .map(|line| {
            let (name, rest) = line.split_once(' ').unwrap();
            let (value, source) = rest
                .trim_end()
                .rsplit_once("  ")
                .unwrap_or_else(|| panic!("no source column: {line}"));
            (
                name.to_string(),
                (value.trim().to_string(), source.to_string()),
            )
        })
        .collect()
}

/// The container's environment as the kubelet builds it: `envFrom` ConfigMaps first, then
/// `env` (Secrets get a stand-in value of the right shape). A source the chart does not render
/// is the user's own, optional (the plain manifests' `job-executor-local`): empty here.
fn resolve_env(docs: &[Value], container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let (kind, reference) = match &source["configMapRef"] {
            Value::Null => ("Secret", &source["secretRef"]),
            reference => ("ConfigMap", reference),
        };
        let name = reference["name"].as_str().unwrap();
        let rendered = docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name);
        let Some(object) = rendered.filter(|_| kind == "ConfigMap") else {
            assert_eq!(reference["optional"], true, "{kind} {name} is not rendered");
            continue;
        };
        for (key, value) in object["data"].as_object().unwrap() {
            env.insert(key.clone(), value.as_str().unwrap().to_string());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_string();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_string()
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            "job-executor-7d9c5b-x2k4p".to_string()
        } else {
            assert!(
                var["valueFrom"]["secretKeyRef"]["name"].is_string(),
                "{var}"
            );
            match name.as_str() {
                "JOB_EXECUTOR_SINK_HEADERS" => "x-token: from-the-secret".to_string(),
                _ => "from-the-secret".to_string(),
            }
        };
        env.insert(name, value);
    }
    env
}

/// `check-run`'s table for the Deployment of `docs` (empty when `run` refuses for want of a config
/// source, as it must then).
fn check_run(name: &str, docs: &[Value]) -> BTreeMap<String, (String, String)> {
    let deployment = find(docs, "Deployment", None);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{name}");
    let env = resolve_env(docs, container);
    let known = run_env_flags();
    for key in env.keys() {
        if key.starts_with("JOB_EXECUTOR_") {
            assert!(
                known.contains_key(key),
                "{name}: `job-executor run` has no setting {key}"
            );
        } else {
            assert_eq!(key, "RUST_LOG", "{name}: unexpected variable");
        }
    }
    let output = Command::new(BIN)
        .arg("check-run")
        .args(&args[1..])
        .env_clear()
        .envs(&env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let has_source = ["JOB_EXECUTOR_CONFIG_DIR", "JOB_EXECUTOR_GIT_URL"]
        .iter()
        .any(|k| env.contains_key(*k));
    if !has_source {
        // The chart's defaults name no config source (NOTES.txt warns): `run` must say so.
        assert!(
            !output.status.success()
                && String::from_utf8_lossy(&output.stderr).contains("--config-dir"),
            "{name}: {output:?}"
        );
        return BTreeMap::new();
    }
    assert!(
        output.status.success(),
        "{name}: `job-executor run` refuses the Deployment's arguments and environment:\n{}\nenv: {env:#?}",
        String::from_utf8_lossy(&output.stderr)
    );
    // One line per setting of `run`, each with where the Deployment put its value: a flag in
    // the arguments, or the environment; the default otherwise.
    let table = settings_table(&stdout);
    assert_eq!(
        table.keys().cloned().collect::<BTreeSet<String>>(),
        known.values().cloned().collect::<BTreeSet<String>>(),
        "{name}: {stdout}"
    );
    let flags: BTreeSet<&str> = args[1..]
        .iter()
        .filter_map(|arg| arg.starts_with("--").then(|| arg.split('=').next())?)
        .collect();
    for (env_name, flag) in &known {
        let (_, source) = &table[flag];
        let expected = if flags.contains(flag.as_str()) {
            "flag".to_string()
        } else if env.contains_key(env_name) {
            format!("env {env_name}")
        } else {
            "default".to_string()
        };
        assert_eq!(source, &expected, "{name}: {flag}");
    }
    // The values arrived (not the flag defaults).
    let namespace = &env["JOB_EXECUTOR_JOB_NAMESPACE"];
    assert_eq!(
        table["--job-namespace"],
        (
            namespace.clone(),
            "env JOB_EXECUTOR_JOB_NAMESPACE".to_string()
        ),
        "{name}: {stdout}"
    );
    // Secrets are shown as set, never their values.
    assert!(
        !stdout.contains("from-the-secret"),
        "{name}: a secret is shown:\n{stdout}"
    );
    if env.contains_key("JOB_EXECUTOR_INGEST_TOKEN") {
        assert_eq!(table["--ingest-token"].0, "****", "{name}");
    }
    if let Some(file) = env.get("JOB_EXECUTOR_INGEST_TOKEN_FILE") {
        assert_eq!(&table["--ingest-token-file"].0, file, "{name}");
    }
    if env.contains_key("JOB_EXECUTOR_SINK_HEADERS") {
        assert_eq!(table["--sink-header"].0, "x-token: ****", "{name}");
    }
    table
}

#[test]
fn deployment_arguments_and_environment_are_accepted_by_run() {
    check_run(
        "deploy/service.yaml",
        &documents(&read("deploy/service.yaml")),
    );
    for (name, yaml) in renderings() {
        check_run(name, &documents(&yaml));
    }
}

/// Every setting of `job-executor run` can be made through the chart: its variable is in one of
/// the chart's renderings, or the chart makes it another way, said here.
#[test]
fn every_setting_of_run_can_be_made_through_the_chart() {
    const ANOTHER_WAY: &[(&str, &str)] = &[
        (
            "JOB_EXECUTOR_GIT_USERNAME",
            "configSource.git.credentialsSecret, as files",
        ),
        (
            "JOB_EXECUTOR_GIT_PASSWORD",
            "configSource.git.credentialsSecret, as files",
        ),
        ("JOB_EXECUTOR_SINK_HEADERS", "sink.headersSecret, as a file"),
        ("JOB_EXECUTOR_INGEST_TOKEN", "ingest.token, as a file"),
        (
            "JOB_EXECUTOR_GIT_CACHE_DIR",
            "the default, in the pod's /tmp emptyDir",
        ),
    ];
    let dir = tempdir("every-setting");
    let directory = dir.join("directory-values.yaml");
    std::fs::write(
        &directory,
        "configSource:\n  git:\n    url: \"\"\n  directory:\n    path: /configs\n    volume: {emptyDir: {}}\n",
    )
    .unwrap();
    let mut made = BTreeSet::new();
    let mut yamls: Vec<String> = renderings().into_iter().map(|(_, yaml)| yaml).collect();
    yamls.push(render(&[FULL_VALUES, NOTIFICATIONS_VALUES]));
    yamls.push(render(&[FULL_VALUES, directory.to_str().unwrap()]));
    for yaml in yamls {
        let docs = documents(&yaml);
        let container =
            &find(&docs, "Deployment", None)["spec"]["template"]["spec"]["containers"][0];
        made.extend(resolve_env(&docs, container).into_keys());
    }
    let mut missing = Vec::new();
    for env in run_env_flags().keys() {
        let another_way = ANOTHER_WAY.iter().any(|(name, _)| name == env);
        assert!(
            !(another_way && made.contains(env)),
            "{env} is made by the chart: take it off ANOTHER_WAY"
        );
        if !another_way && !made.contains(env) {
            missing.push(env.clone());
        }
    }
    assert!(missing.is_empty(), "no value of the chart sets {missing:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The chart's notification settings (ci/notifications-values.yaml) are accepted by `run`, the
/// mounted Secret stood in by a directory holding a file per target.
#[test]
fn notification_settings_are_accepted_by_run() {
    let mut docs = documents(&render(&[FULL_VALUES, NOTIFICATIONS_VALUES]));
    let dir = tempdir("notify");
    for target in ["ops", "audit"] {
        std::fs::write(
            dir.join(target),
            format!("https://hooks.example.com/{target}"),
        )
        .unwrap();
    }
    let config = docs
        .iter_mut()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "jx")
        .unwrap();
    assert_eq!(
        config["data"]["JOB_EXECUTOR_NOTIFY_DIR"],
        "/etc/job-executor/notify"
    );
    config["data"]["JOB_EXECUTOR_NOTIFY_DIR"] = json!(dir.to_str().unwrap());
    let table = check_run("ci/notifications-values.yaml", &docs);
    let (targets, source) = &table["--notify"];
    assert_eq!(source, "env JOB_EXECUTOR_NOTIFY");
    assert!(
        targets.contains("slack:ops:failed")
            && targets.contains("webhook:audit:started,succeeded,failed"),
        "{targets}"
    );
    assert_eq!(table["--notify-timeout-seconds"].0, "5");
    assert_eq!(table["--notify-retries"].0, "3");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_run_reports_what_run_would_refuse() {
    // `check-run` with `args` and an empty environment: what it says on stderr (it must fail).
    let refused = |args: &[&str]| {
        let output = Command::new(BIN)
            .arg("check-run")
            .args(["--config-dir", "/c"])
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        assert!(!output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = refused(&["--sink-url", "ftp://sink"]);
    assert!(
        stderr.contains("is not a valid http://, https:// or nats:// URL"),
        "{stderr}"
    );
    // A refused Secret is a name or the start of names followed by `*`.
    let stderr = refused(&["--sink-url", "http://sink", "--refused-secrets", "a,*"]);
    assert!(
        stderr.contains("\"*\" is neither a Secret's name nor the start of names followed by `*`"),
        "{stderr}"
    );
    // A NATS sink takes no headers (the chart's sink.headersSecret left set when switching).
    let stderr = refused(&[
        "--sink-url",
        "nats://nats:4222",
        "--sink-header-file",
        "/etc/job-executor/sink-headers/headers",
    ]);
    assert!(stderr.contains("headers"), "{stderr}");
    let stderr = refused(&[
        "--sink-url",
        "http://sink",
        "--nats-url",
        "http://user:secret@nats:4222",
    ]);
    assert!(
        stderr.contains("--nats-url \"http://nats:4222\" is not a nats:// (or tls://) URL")
            && !stderr.contains("secret"),
        "{stderr}"
    );
    let output = Command::new(BIN)
        .args([
            "check-run",
            "--config-dir",
            "/c",
            "--sink-url",
            "http://sink",
        ])
        .env_clear()
        .env("JOB_EXECUTOR_ALLOWED_IMAGES", "[")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid image pattern"),
        "{output:?}"
    );
    // The git source as `run` builds it: a URL `run` would refuse is refused here too.
    let output = Command::new(BIN)
        .args([
            "check-run",
            "--git-url",
            "ftp://git.example.com/configs.git",
            "--sink-url",
            "http://sink",
        ])
        .env_clear()
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("use https://, http://, ssh:// or file://"),
        "{output:?}"
    );
}

/// What the chart's schema and checks let through of the backoff delay, the listen address and
/// default resources (a request equal to its limit, written otherwise), `run` takes as given.
#[test]
fn delays_and_addresses_the_chart_accepts_are_accepted_by_run() {
    let dir = tempdir("accepted-values");
    let file = dir.join("values.yaml");
    for (delay, address, listen) in [
        ("250ms", "0.0.0.0", "0.0.0.0:8080"),
        ("1m30s", "::", "[::]:8080"),
        ("1h", "127.0.0.1", "127.0.0.1:8080"),
        ("1.5s", "fd00::1", "[fd00::1]:8080"),
        ("2s", "fe80::1:2", "[fe80::1:2]:8080"),
        ("0.5m", "0.0.0.0", "0.0.0.0:8080"),
        ("PT0.25S", "0.0.0.0", "0.0.0.0:8080"),
        ("PT1M30S", "0.0.0.0", "0.0.0.0:8080"),
        ("PT1H", "0.0.0.0", "0.0.0.0:8080"),
    ] {
        std::fs::write(
            &file,
            format!(
                "sink:\n  backoffDelay: \"{delay}\"\nservice:\n  listenAddress: \"{address}\"\n\
                 settings:\n  defaultResources: {{cpuRequest: \"0.7\", cpuLimit: 700m, \
                 memoryRequest: 1.5Gi, memoryLimit: 1610612736}}\n"
            ),
        )
        .unwrap();
        let docs = documents(&render(&[FULL_VALUES, file.to_str().unwrap()]));
        let table = check_run(delay, &docs);
        assert_eq!(table["--sink-backoff-delay"].0, delay);
        assert_eq!(table["--listen"].0, listen, "{address}");
        assert_eq!(table["--default-cpu-request"].0, "0.7");
        // A YAML number: Helm writes it with an exponent (`e+09`), read in base 10.
        assert_eq!(table["--default-memory-limit"].0, "1.610612736e+09");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
