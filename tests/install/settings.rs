//! The Deployment's arguments and environment, resolved as the kubelet would (ConfigMap
//! `envFrom`, Secret `secretKeyRef`), are accepted by `job-executor run`'s real parser: the
//! child process `job-executor check-run` parses them with the same `RunArgs` and builds the
//! settings and the sink as `run` does, without a cluster.

use std::collections::BTreeMap;
use std::process::Command;

use clap::CommandFactory;
use job_executor::cli::Cli;
use serde_json::Value;

use crate::chart::renderings;
use crate::common::{BIN, documents, find, read};

/// The environment variables `job-executor run` reads.
fn run_env_names() -> Vec<String> {
    let cli = Cli::command();
    let run = cli.find_subcommand("run").unwrap();
    run.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// The container's environment as the kubelet builds it: `envFrom` ConfigMaps first, then
/// `env` (Secrets get a stand-in value of the right shape).
fn resolve_env(docs: &[Value], container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"].as_str().unwrap();
        let config = find(docs, "ConfigMap", Some(name));
        for (key, value) in config["data"].as_object().unwrap() {
            env.insert(key.clone(), value.as_str().unwrap().to_string());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_string();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_string()
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

fn check_run(name: &str, docs: &[Value]) {
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
    let known = run_env_names();
    for key in env.keys() {
        if key.starts_with("JOB_EXECUTOR_") {
            assert!(
                known.contains(key),
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
        return;
    }
    assert!(
        output.status.success(),
        "{name}: `job-executor run` refuses the Deployment's arguments and environment:\n{}\nenv: {env:#?}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The values arrived (not the flag defaults).
    let namespace = &env["JOB_EXECUTOR_JOB_NAMESPACE"];
    assert!(
        stdout.contains(&format!("job_namespace: \"{namespace}\"")),
        "{name}: {stdout}"
    );
    assert!(
        !stdout.contains("from-the-secret"),
        "{name}: secrets are redacted"
    );
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

#[test]
fn check_run_reports_what_run_would_refuse() {
    let output = Command::new(BIN)
        .args([
            "check-run",
            "--config-dir",
            "/c",
            "--sink-url",
            "https://sink",
        ])
        .env_clear()
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not a valid http:// URL"),
        "{output:?}"
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
}
