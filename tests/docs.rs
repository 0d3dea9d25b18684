//! Every shell block of README.md and docs/*.md is run by a test (the table `RUN_BY` says which,
//! and a test fails when a block is added that no test runs). The install and first-event
//! blocks run here exactly as written (extracted from the Markdown) on the real control plane,
//! so the documentation cannot drift from what works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterHarness, cluster, path};
use support::root;

/// A ```sh block of a Markdown file: the heading it is under, its place among that heading's
/// blocks, and its text.
#[derive(Debug)]
struct ShBlock {
    doc: String,
    heading: String,
    index: usize,
    text: String,
}

/// Every ```sh block of `doc` (a path under the repository).
fn sh_blocks(doc: &str) -> Vec<ShBlock> {
    let text = std::fs::read_to_string(root().join(doc)).unwrap();
    let (mut blocks, mut heading, mut index) = (Vec::new(), String::new(), 0);
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            heading = line.to_string();
            index = 0;
        } else if line.starts_with("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            if line == "```sh" {
                blocks.push(ShBlock {
                    doc: doc.to_string(),
                    heading: heading.clone(),
                    index,
                    text: body.join("\n"),
                });
                index += 1;
            }
        }
    }
    blocks
}

/// The `index`th ```sh block under the line `heading` of `doc`.
fn sh_block_at(doc: &str, heading: &str, index: usize) -> String {
    sh_blocks(doc)
        .into_iter()
        .find(|b| b.heading == heading && b.index == index)
        .unwrap_or_else(|| panic!("{doc} has no sh block {index} under {heading:?}"))
        .text
}

/// The first ```sh block under the line `heading` of `doc`.
fn sh_block(doc: &str, heading: &str) -> String {
    sh_block_at(doc, heading, 0)
}

/// The documents whose shell blocks must all be run.
fn documents() -> Vec<String> {
    let mut docs = vec!["README.md".to_string()];
    let mut in_docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    docs
}

/// What runs each shell block of the docs: `tests/FILE.rs TEST` (a test that runs it),
/// `.ci/run` (the CI entry point runs it), or `not run: WHY`.
#[rustfmt::skip]
const RUN_BY: &[(&str, &str, usize, &str)] = &[
    ("docs/notifications.md", "## The Secret of targets", 0,
        "tests/notifications.rs a_run_tells_its_slack_and_webhook_targets_on_the_real_control_plane"),
    ("docs/notifications.md", "### Without the chart", 0,
        "tests/docs.rs the_run_examples_are_accepted_as_written"),
    ("docs/nats.md", "## Taking events from NATS", 0,
        "tests/docs.rs the_run_examples_are_accepted_as_written"),
    ("docs/schedules.md", "## A JobSchedule", 0,
        "tests/schedules.rs the_schedules_page_commands_work_on_the_real_control_plane"),
    ("README.md", "## On a fresh machine", 0,
        "tests/demo.rs the_demo_runs_the_whole_loop_on_the_simulator"),
    ("README.md", "## On a fresh machine", 1,
        "tests/docs.rs the_readme_dry_run_renders_the_sample_event"),
    ("README.md", "## On a fresh machine", 2,
        ".ci/run"),
    ("README.md", "## Install", 0,
        "tests/docs.rs the_install_commands_of_the_docs_work_as_written"),
    ("docs/BENCHMARKS.md", "## The pure core (criterion)", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "## The operator under load (`benches/load.rs`)", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "## On the real API server (Kubernetes v1.36.3, `LOAD_TARGET=cluster`)", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "## Two replicas (`LOAD_REPLICAS=2`)", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Ingest: the operator's own work alone; git lookups without copies", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Ingest: events that start nothing answered from a sketch", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### A cached run's event trimmed without parsing it whole", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Ingest: the floor measured again, with a stack that only checks the event", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Ingest: reasons written straight into the answer; decisions and lookups without copies", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Ingest: what the spec's checks cost (2026-12-05)", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Ingest from a git host: no event waits for a fetch", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Ingest after a push: one read of the config for all events, read ahead", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Ingest after a push to one of many services: compiled once per content, the configs at the heads kept", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Ingest with more configs in use than the bound: all kept; a compiled config a fifth of its size", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Latency at 500 events/s: not reachable here", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Latency at 500 events/s: not reachable here", 1,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Writes per run: 6 / 10 → 5 / 9", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### 100,000 finished runs retained: 992 MiB → 294 MiB", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Memory with 10,000 runs in flight: 252 → 175 MiB", 0,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/BENCHMARKS.md", "### Memory with 10,000 runs in flight: 252 → 175 MiB", 1,
        "tests/docs.rs the_benchmark_commands_run_in_quick_mode"),
    ("docs/cluster.md", "## Use it", 0,
        "tests/docs.rs the_cluster_guide_runs_as_written"),
    ("docs/cluster.md", "### Go", 0,
        "tests/docs.rs the_cluster_fetches_go_when_the_machine_has_none"),
    ("docs/cluster.md", "### Request limits for load runs", 0,
        "tests/docs.rs the_cluster_request_limits_reach_the_components_as_written"),
    ("docs/git-source.md", "# The git config source", 0,
        "tests/docs.rs the_run_examples_are_accepted_as_written"),
    ("docs/git-source.md", "## Credentials", 0,
        "tests/docs.rs the_git_credentials_secrets_are_created_as_written"),
    ("docs/fuzzing.md", "## Running them", 0,
        "not run: needs the nightly toolchain and cargo-fuzz; tests/fuzz_corpora.rs replays the corpora on stable"),
    ("docs/install.md", "## The image", 0,
        "not run: no machine of the project has a container runtime"),
    ("docs/install.md", "## Install with kubectl", 0,
        "tests/docs.rs the_install_commands_of_the_docs_work_as_written"),
    ("docs/install.md", "## Install with kubectl", 1,
        "tests/docs.rs the_install_commands_of_the_docs_work_as_written"),
    ("docs/install.md", "### Upgrading a kubectl install", 0,
        "tests/docs.rs the_install_commands_of_the_docs_work_as_written"),
    ("docs/install.md", "## Install with Helm", 0,
        "tests/docs.rs the_install_commands_of_the_docs_work_as_written"),
    ("docs/install.md", "## Install with Helm", 1,
        "tests/docs.rs the_install_commands_of_the_docs_work_as_written"),
    ("docs/install.md", "## Send the first event", 0,
        "tests/docs.rs the_first_event_is_sent_and_watched_as_written"),
    ("docs/install.md", "## Watch it work", 0,
        "tests/docs.rs the_first_event_is_sent_and_watched_as_written"),
    ("docs/install.md", "## Uninstall", 0,
        "tests/docs.rs the_install_commands_of_the_docs_work_as_written"),
    ("docs/install.md", "## Uninstall", 1,
        "tests/docs.rs the_install_commands_of_the_docs_work_as_written"),
    ("docs/operator.md", "## Running it", 0,
        "tests/docs.rs the_run_examples_are_accepted_as_written"),
    ("docs/testing.md", "## Mutation testing", 0,
        "not run: a measurement of an hour and more, recorded in the table below the block"),
    ("docs/operator.md", "### Cancelling a run", 0,
        "tests/workflow.rs a_cancel_during_the_second_task_stops_the_run_on_kube_sim"),
    ("docs/operator.md", "### Delivering `.started` and `.finished`", 0,
        "tests/operator.rs an_https_sink_a_rotated_token_and_a_dead_letter_sink"),
    ("docs/schedules.md", "## Checking a schedule", 0,
        "tests/docs.rs the_schedule_check_prints_what_the_docs_show"),
    ("docs/operator.md", "### A run's history", 0,
        "tests/workflow.rs a_failure_skips_what_needs_it_on_kube_sim"),
    ("docs/operator.md", "### Concurrency groups", 0,
        "tests/workflow.rs a_group_of_one_runs_its_queue_in_arrival_order_on_kube_sim"),
    ("docs/operator.md", "### Authenticating senders", 0,
        "tests/docs.rs the_signed_request_of_the_docs_is_accepted"),
];

#[test]
fn every_shell_block_of_the_docs_is_run_by_a_test() {
    let found: BTreeSet<(String, String, usize)> = documents()
        .iter()
        .flat_map(|doc| sh_blocks(doc))
        .map(|b| (b.doc, b.heading, b.index))
        .collect();
    let listed: BTreeSet<(String, String, usize)> = RUN_BY
        .iter()
        .map(|(doc, heading, index, _)| (doc.to_string(), heading.to_string(), *index))
        .collect();
    assert_eq!(
        found.difference(&listed).collect::<Vec<_>>(),
        Vec::<&(String, String, usize)>::new(),
        "shell blocks no test runs: run them in a test and list them in RUN_BY"
    );
    assert_eq!(
        listed.difference(&found).collect::<Vec<_>>(),
        Vec::<&(String, String, usize)>::new(),
        "RUN_BY lists blocks the docs no longer have"
    );
    for (doc, heading, index, runner) in RUN_BY {
        if let Some((file, test)) = runner
            .split_once(' ')
            .filter(|(f, _)| f.starts_with("tests/"))
        {
            let source = std::fs::read_to_string(root().join(file)).unwrap();
            assert!(
                source.contains(&format!("fn {test}(")),
                "{doc} {heading} #{index}: {file} has no test {test}"
            );
        } else if *runner == ".ci/run" {
            let block = sh_block_at(doc, heading, *index);
            let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
            assert!(
                ci.lines().any(|line| line.trim() == block.trim()),
                "{doc} {heading} #{index}: .ci/run does not run {block:?}"
            );
        } else {
            assert!(runner.starts_with("not run: "), "{runner}");
        }
    }
}

/// Runs `block` with bash as a user would: from the repository, with the control plane's
/// kubectl and helm and the built `job-executor` first on the PATH.
fn run_block(cluster: &Cluster, block: &str, env: &[(&str, &str)]) -> Output {
    block_command(cluster, block, env).output().unwrap()
}

/// The bash command of [`run_block`], in a process group of its own (so what the block starts
/// in the background can be stopped with it).
fn block_command(cluster: &Cluster, block: &str, env: &[(&str, &str)]) -> Command {
    let bin_dir = std::path::Path::new(support::BIN).parent().unwrap();
    let path = format!(
        "{}:{}:{}",
        cluster.dir.join("bin").display(),
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(root())
        .env("PATH", path)
        .env("KUBECONFIG", &cluster.admin_kubeconfig)
        .env("KUBECACHEDIR", cluster.dir.join("kube-cache"))
        .env_remove("KEPTN_API_TOKEN")
        .process_group(0);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Stops the process group of `child` (a block and what it started in the background).
fn stop_group(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

/// The installs of the docs all use the namespace `job-executor` and delete the CRD when they
/// uninstall: one test at a time, and none that needs the CRD meanwhile.
static DOCS_NAMESPACE: Mutex<()> = Mutex::new(());

fn fresh_namespace(cluster: &Cluster) {
    let _ = cluster.kubectl_output(
        &cluster.admin_kubeconfig,
        &["delete", "namespace", "job-executor", "--timeout=90s"],
    );
}

/// The value at `key` of the Secret `name` in the operator's namespace.
fn secret_value(cluster: &Cluster, name: &str, key: &str) -> String {
    let secret = cluster.kubectl_json(&["-n", "job-executor", "get", "secret", name]);
    let parsed: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).unwrap();
    let data = parsed.data.unwrap_or_default();
    let value = data
        .get(key)
        .unwrap_or_else(|| panic!("{name} has no {key}"));
    String::from_utf8(value.0.clone()).unwrap()
}

fn assert_installed(cluster: &Cluster, token: &str) {
    assert_eq!(
        secret_value(cluster, "job-executor", "sink-headers"),
        format!("x-token: {token}")
    );
    let ingest_token = secret_value(cluster, "job-executor", "ingest-token");
    assert_eq!(ingest_token.len(), 48, "openssl rand -hex 24");
    cluster.rollout_status("job-executor");
    cluster.kubectl(&["get", "crd", "jobruns.job-executor.dev"]);
}

#[test]
fn the_install_commands_of_the_docs_work_as_written() {
    let _namespace = DOCS_NAMESPACE.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = cluster();

    // docs/install.md, "Install with kubectl", without a warning from the API server (an
    // unknown schema format in the CRDs, a Namespace applied that `create` made). The CRDs
    // are deleted first, so the block creates them as a first install does (applied unchanged,
    // they would not be checked again).
    fresh_namespace(cluster);
    cluster.kubectl(&[
        "delete",
        "crd",
        "jobruns.job-executor.dev",
        "jobschedules.job-executor.dev",
        "--ignore-not-found",
    ]);
    let block = sh_block("docs/install.md", "## Install with kubectl");
    let out = run_block(cluster, &block, &[("KEPTN_API_TOKEN", "docs-token")]);
    assert_no_warnings(&out, &block);
    assert_ran(out, &block);
    assert_installed(cluster, "docs-token");

    // README.md, "Install": the same, and the config repository set in the settings.
    fresh_namespace(cluster);
    let block = sh_block("README.md", "## Install");
    let out = run_block(cluster, &block, &[("KEPTN_API_TOKEN", "readme-token")]);
    assert_no_warnings(&out, &block);
    assert_ran(out, &block);
    assert_installed(cluster, "readme-token");
    let yours = || {
        cluster.kubectl_json(&[
            "-n",
            "job-executor",
            "get",
            "configmap",
            "job-executor-local",
        ])
    };
    let git_url_is_yours = || {
        let settings = yours();
        assert_eq!(
            settings["data"]["JOB_EXECUTOR_GIT_URL"],
            "https://your-git-server/your-keptn-config.git",
            "{settings}"
        );
    };
    git_url_is_yours();
    // docs/install.md, a setting changed: put in yours beside the others, and the operator
    // restarted (a new ReplicaSet, rolled out).
    let set = sh_block_at("docs/install.md", "## Install with kubectl", 1);
    let before = cluster.kubectl_json(&["-n", "job-executor", "get", "replicasets"]);
    let out = run_block(cluster, &set, &[]);
    assert_no_warnings(&out, &set);
    assert_ran(out, &set);
    git_url_is_yours();
    let settings = yours();
    assert_eq!(
        settings["data"]["JOB_EXECUTOR_SINK_TIMEOUT_SECONDS"], "30",
        "{settings}"
    );
    let after = cluster.kubectl_json(&["-n", "job-executor", "get", "replicasets"]);
    assert_eq!(
        after["items"].as_array().map(Vec::len),
        before["items"].as_array().map(|sets| sets.len() + 1),
        "a restart makes a ReplicaSet: {after}"
    );
    // The operator's environment takes them after the shipped ConfigMap; nothing on the
    // Deployment overrides them.
    let deployment =
        cluster.kubectl_json(&["-n", "job-executor", "get", "deployment", "job-executor"]);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = &container["env"];
    assert!(!env.to_string().contains("JOB_EXECUTOR_GIT_URL"), "{env}");
    assert_eq!(
        container["envFrom"][1]["configMapRef"]["name"], "job-executor-local",
        "{container}"
    );

    // docs/install.md, "Upgrading a kubectl install", from an install whose settings were
    // patched into the shipped ConfigMap (as the README did before `job-executor-local`): they
    // move to yours, and the apply resets the shipped one.
    fresh_namespace(cluster);
    let install = sh_block("docs/install.md", "## Install with kubectl");
    assert_ran(
        run_block(cluster, &install, &[("KEPTN_API_TOKEN", "t")]),
        &install,
    );
    cluster.kubectl(&[
        "-n",
        "job-executor",
        "patch",
        "configmap",
        "job-executor",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"JOB_EXECUTOR_GIT_URL":"https://your-git-server/your-keptn-config.git"}}"#,
    ]);
    let upgrade = sh_block("docs/install.md", "### Upgrading a kubectl install");
    let out = run_block(cluster, &upgrade, &[]);
    assert_no_warnings(&out, &upgrade);
    assert_ran(out, &upgrade);
    git_url_is_yours();
    let shipped = cluster.kubectl_json(&["-n", "job-executor", "get", "configmap", "job-executor"]);
    assert_ne!(
        shipped["data"]["JOB_EXECUTOR_GIT_URL"], "https://your-git-server/your-keptn-config.git",
        "the apply resets the shipped ConfigMap: {shipped}"
    );
    // Run again (yours exists now): it is kept as it is.
    assert_ran(run_block(cluster, &upgrade, &[]), &upgrade);
    git_url_is_yours();

    // Without the Keptn API token the commands stop with a message, instead of creating an
    // empty header.
    fresh_namespace(cluster);
    let out = run_block(cluster, &block, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("set KEPTN_API_TOKEN to your Keptn API token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = cluster.kubectl_output(
        &cluster.admin_kubeconfig,
        &["-n", "job-executor", "get", "secret", "job-executor"],
    );
    assert!(!secret.status.success(), "no Secret with an empty header");

    // docs/install.md, "Uninstall", after the kubectl install: nothing of it is left.
    fresh_namespace(cluster);
    let install = sh_block("docs/install.md", "## Install with kubectl");
    assert_ran(
        run_block(cluster, &install, &[("KEPTN_API_TOKEN", "t")]),
        &install,
    );
    let uninstall = sh_block("docs/install.md", "## Uninstall");
    assert_ran(run_block(cluster, &uninstall, &[]), &uninstall);
    for name in ["jobruns.job-executor.dev", "jobschedules.job-executor.dev"] {
        let crd = cluster.kubectl_output(&cluster.admin_kubeconfig, &["get", "crd", name]);
        assert!(!crd.status.success(), "the CRD {name} is gone");
    }
    cluster.kubectl(&[
        "wait",
        "--for=delete",
        "namespace/job-executor",
        "--timeout=90s",
    ]);

    // docs/install.md, "Install with Helm": the chart installs the CRD and rolls out.
    let helm = sh_block("docs/install.md", "## Install with Helm");
    let out = run_block(
        cluster,
        &helm,
        &[
            ("KEPTN_API_TOKEN", "helm-token"),
            ("GIT_TOKEN", "git-token"),
        ],
    );
    assert_no_warnings(&out, &helm);
    assert_ran(out, &helm);
    // The Secrets the chart's values name exist, with the keys it reads.
    assert_eq!(
        secret_value(cluster, "keptn-api-token", "headers"),
        "x-token: helm-token"
    );
    assert_eq!(
        secret_value(cluster, "keptn-config-git", "token"),
        "git-token"
    );
    cluster.kubectl(&["get", "crd", "jobruns.job-executor.dev"]);
    cluster.kubectl(&["get", "crd", "jobschedules.job-executor.dev"]);
    cluster.rollout_status("job-executor");
    // docs/install.md, the ingest token for tools without `lookup`: a Secret of one line,
    // which the chart mounts in place of the generated one once named.
    let own_token = sh_block_at("docs/install.md", "## Install with Helm", 1);
    assert_ran(run_block(cluster, &own_token, &[]), &own_token);
    let token = secret_value(cluster, "job-executor-ingest-token", "token");
    assert!(
        token.len() == 40 && !token.contains(char::is_whitespace),
        "{token:?}"
    );
    cluster.helm(&[
        "upgrade",
        "job-executor",
        path(&root().join("charts/job-executor")),
        "--namespace",
        "job-executor",
        "--reuse-values",
        "--set",
        "ingest.token.existingSecret=job-executor-ingest-token",
    ]);
    let deployment =
        cluster.kubectl_json(&["-n", "job-executor", "get", "deployment", "job-executor"]);
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(
        volumes.contains(r#""secretName":"job-executor-ingest-token""#),
        "{volumes}"
    );
    cluster.rollout_status("job-executor");
    // docs/install.md, "Uninstall" with Helm: the release and the CRD are gone.
    let uninstall = sh_block_at("docs/install.md", "## Uninstall", 1);
    assert_ran(run_block(cluster, &uninstall, &[]), &uninstall);
    for name in ["jobruns.job-executor.dev", "jobschedules.job-executor.dev"] {
        let crd = cluster.kubectl_output(&cluster.admin_kubeconfig, &["get", "crd", name]);
        assert!(!crd.status.success(), "the CRD {name} is gone");
    }
    assert!(
        !cluster
            .kubectl_output(
                &cluster.admin_kubeconfig,
                &["-n", "job-executor", "get", "deployment", "job-executor"]
            )
            .status
            .success(),
        "the release is gone"
    );
    fresh_namespace(cluster);
    // The other tests of this binary expect the CRD.
    cluster.kubectl(&["apply", "-f", path(&root().join("crds"))]);
}

/// What kubectl and Helm print of the API server's warnings ("Warning: …", or a client-go log
/// line from `warnings.go`).
fn assert_no_warnings(out: &Output, block: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Warning") && !stderr.contains("warnings.go"),
        "{block}\n{stderr}"
    );
}

fn assert_ran(out: Output, block: &str) {
    assert!(
        out.status.success(),
        "{block}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// docs/cluster.md, "Use it", word for word, on a second control plane of its own (its own
/// state directory), so its `down` does not stop the one the other tests use.
#[test]
fn the_cluster_guide_runs_as_written() {
    let block = sh_block("docs/cluster.md", "## Use it");
    let dir = std::env::temp_dir().join(format!("je-docs-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(root())
        .env("JOB_EXECUTOR_CLUSTER_DIR", &dir)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_ran(out.clone(), &block);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kwok-node-0") && stdout.contains("Ready"),
        "{stdout}"
    );
    assert!(
        stdout.contains("kube-system") && stdout.contains("Active"),
        "{stdout}"
    );
    assert!(!dir.exists(), "down removes the state");
}

/// docs/cluster.md, "Go", as written: where the machine's `go` is too old (Debian 12's 1.19,
/// faked here first on the PATH), the block fetches Go from the module proxy into the
/// directory given, and a second call uses what the first fetched; on this machine's PATH, its
/// own `go` (1.26).
#[test]
fn the_cluster_fetches_go_when_the_machine_has_none() {
    let block = sh_block("docs/cluster.md", "### Go");
    let dir = std::env::temp_dir().join(format!("je-docs-go-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let old = dir.join("debian");
    std::fs::create_dir_all(&old).unwrap();
    // As much of Debian's Go 1.19 as the script asks: its version.
    let fake = old.join("go");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$*\" in \"env GOVERSION\") echo go1.19.8 ;; *) exit 1 ;; esac\n",
    )
    .unwrap();
    let executable = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&fake, executable).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    let go_of = |path: &str| {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block])
            .current_dir(root())
            .env("PATH", path)
            .env("JOB_EXECUTOR_GO_DIR", dir.join("fetched"))
            .output()
            .unwrap();
        assert_ran(out.clone(), &block);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            stderr,
        )
    };
    let with_old = format!("{}:{path}", old.display());
    let (fetched, said) = go_of(&with_old);
    assert_eq!(
        fetched,
        dir.join("fetched/go1.26.8/bin/go").display().to_string(),
        "{said}"
    );
    assert!(
        said.contains("fetching Go 1.26.8 from the Go module proxy"),
        "{said}"
    );
    let version = Command::new(&fetched).arg("version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("go version go1.26.8 "),
        "{version:?}"
    );
    let (again, said) = go_of(&with_old);
    assert_eq!(again, fetched);
    assert!(said.is_empty(), "fetched once: {said}");
    let (own, _) = go_of(&path);
    assert!(!own.starts_with(&dir.display().to_string()), "{own}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/cluster.md, "Request limits for load runs", line by line on a control plane of its own:
/// the first `up` gives kube-controller-manager and kube-scheduler the limits, the second (none)
/// starts them again without, `down` removes the state.
#[test]
fn the_cluster_request_limits_reach_the_components_as_written() {
    let block = sh_block("docs/cluster.md", "### Request limits for load runs");
    let lines: Vec<&str> = block
        .lines()
        .map(|l| l.split(" # ").next().unwrap().trim())
        .collect();
    assert_eq!(
        lines,
        [
            "CLUSTER_API_QPS=200 scripts/cluster up",
            "scripts/cluster up",
            "scripts/cluster down"
        ]
    );
    let dir = std::env::temp_dir().join(format!("je-docs-limits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Stops this control plane if an assertion fails before the block's `down`.
    struct Down(std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Command::new(root().join("scripts/cluster"))
                .arg("down")
                .env("JOB_EXECUTOR_CLUSTER_DIR", &self.0)
                .output();
        }
    }
    let _down = Down(dir.clone());
    let run = |command: &str| {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", command])
            .current_dir(root())
            .env("JOB_EXECUTOR_CLUSTER_DIR", &dir)
            .env_remove("KUBECONFIG")
            .env_remove("CLUSTER_API_QPS")
            .output()
            .unwrap();
        assert_ran(out.clone(), command);
        out
    };
    // The command lines of the two components, as started.
    let command_lines = || -> Vec<String> {
        let env = String::from_utf8(run("scripts/cluster env").stdout).unwrap();
        ["CONTROLLER_MANAGER_PID", "SCHEDULER_PID"]
            .iter()
            .map(|name| {
                let pid = env
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                    .unwrap()
                    .trim_matches('\'');
                let line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
                String::from_utf8_lossy(&line).replace('\0', " ")
            })
            .collect()
    };
    run(lines[0]);
    for line in command_lines() {
        assert!(
            line.contains("--kube-api-qps 200 --kube-api-burst 400"),
            "{line}"
        );
    }
    let again = run(lines[1]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("starting again"),
        "{again:?}"
    );
    for line in command_lines() {
        assert!(!line.contains("--kube-api-qps"), "{line}");
    }
    run(lines[2]);
    assert!(!dir.exists(), "down removes the state");
}

/// README, "On a fresh machine": the dry run, with the binary `cargo run` builds (a `cargo run`
/// from a test would relink `target/debug/job-executor` without the test build's features,
/// under the other tests).
#[test]
fn the_readme_dry_run_renders_the_sample_event() {
    let block = sh_block_at("README.md", "## On a fresh machine", 1);
    assert!(block.starts_with("cargo run -- "), "{block}");
    let block = block.replacen("cargo run -- ", &format!("{} ", support::BIN), 1);
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(root())
        .output()
        .unwrap();
    assert_ran(out.clone(), &block);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kind: Job"), "{stdout}");
    assert!(stdout.contains("sh.keptn.event.test.started"), "{stdout}");
}

/// README, "Commands": `render --format json` prints no key the README does not name, for any
/// sample event.
#[test]
fn the_readme_names_every_key_of_render_s_json() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let (_, bullet) = readme.split_once("- `job-executor render ").unwrap();
    let (bullet, _) = bullet.split_once("\n- ").unwrap();
    let mut keys = BTreeSet::new();
    for event in std::fs::read_dir(root().join("test-events")).unwrap() {
        let event = event.unwrap().path();
        let out = Command::new(support::BIN)
            .args(["render", "--format", "json", "--event"])
            .arg(&event)
            .args(["--config", "examples/carts/job/config.yaml"])
            .current_dir(root())
            .output()
            .unwrap();
        assert_ran(out.clone(), &event.display().to_string());
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let objects = |value: &serde_json::Value| value.as_array().cloned().unwrap_or_default();
        keys.extend(plan.as_object().unwrap().keys().cloned());
        for list in ["matched", "not_matched"] {
            for entry in objects(&plan[list]) {
                keys.extend(entry.as_object().unwrap().keys().cloned());
                for task in objects(&entry["graph"]) {
                    keys.extend(task.as_object().unwrap().keys().cloned());
                }
                if let Some(group) = entry["concurrency"].as_object() {
                    keys.extend(group.keys().cloned());
                }
            }
        }
    }
    for key in ["graph", "timeout", "concurrency", "after", "policy"] {
        assert!(
            keys.contains(key),
            "no sample event shows {key:?}: {keys:?}"
        );
    }
    for key in &keys {
        assert!(
            bullet.contains(&format!("\"{key}\"")),
            "README does not name {key:?}"
        );
    }
}

/// docs/schedules.md: `job-executor schedule` prints what the page shows after it (the
/// daylight-saving gap of New York moves 02:30 to 03:30).
#[test]
fn the_schedule_check_prints_what_the_docs_show() {
    let block = sh_block("docs/schedules.md", "## Checking a schedule");
    let block = block.replacen("job-executor ", &format!("{} ", support::BIN), 1);
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .output()
        .unwrap();
    assert_ran(out.clone(), &block);
    let text = std::fs::read_to_string(root().join("docs/schedules.md")).unwrap();
    let (_, after) = text.split_once("prints\n\n```text\n").unwrap();
    let (shown, _) = after.split_once("```").unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), shown);
}

/// The plan `render` makes of the first YAML example under `heading` in docs/config.md, for the
/// sample deployment event: the example is a config the binary loads as written.
fn render_config_example(heading: &str, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("docs/config.md")).unwrap();
    let (_, section) = text.split_once(&format!("\n{heading}\n")).unwrap();
    let (_, block) = section.split_once("```yaml\n").unwrap();
    let (yaml, _) = block.split_once("```").unwrap();
    let dir = support::fresh_dir(name);
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    let config = dir.join("carts/job/config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = Command::new(support::BIN)
        .args(["render", "--format", "json", "--event"])
        .arg(root().join("test-events/deployment.triggered.json"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{heading}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// docs/config.md's example of outputs between tasks is a config the binary loads, and its
/// preview gives `deploy` the output as a placeholder.
#[test]
fn the_outputs_example_of_the_config_reference_loads_and_renders() {
    let plan = render_config_example("### Outputs between tasks", "docs-outputs");
    let deploy = &plan["matched"][0]["jobs"][1]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        deploy["env"][0],
        serde_json::json!({"name": "VERSION", "value": "(the output build.version)"})
    );
}

/// docs/operator.md and docs/git-source.md show `job-executor run` for a production cluster
/// (a git server, a Keptn API): `check-run` parses those arguments exactly as `run` does, so
/// every flag they show must be accepted and read from the command line.
#[test]
fn the_run_examples_are_accepted_as_written() {
    for (doc, heading) in [
        ("docs/operator.md", "## Running it"),
        ("docs/git-source.md", "# The git config source"),
        ("docs/nats.md", "## Taking events from NATS"),
        ("docs/notifications.md", "### Without the chart"),
    ] {
        let block = sh_block(doc, heading);
        assert!(block.starts_with("job-executor run "), "{doc}: {block}");
        let check = block.replacen("job-executor run ", "job-executor check-run ", 1);
        let bin_dir = std::path::Path::new(support::BIN).parent().unwrap();
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", &check])
            .current_dir(root())
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            )
            .env("TOKEN", "an-ingest-token");
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("JOB_EXECUTOR_")) {
            command.env_remove(name);
        }
        let out = command.output().unwrap();
        assert_ran(out.clone(), &check);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let flags: Vec<&str> = block
            .split_whitespace()
            .filter(|word| word.starts_with("--"))
            .collect();
        assert!(flags.len() >= 4, "{block}");
        for flag in flags {
            assert!(
                stdout.lines().any(|line| {
                    line.starts_with(&format!("{flag} ")) && line.trim_end().ends_with(" flag")
                }),
                "{doc}: {flag} is not shown as set by a flag:\n{stdout}"
            );
        }
    }
}

/// docs/git-source.md, "Credentials": the two Secrets, created as written (with `ssh-keyscan`
/// answering for git.example.com and a key file beside), hold the keys the git source reads
/// from `--git-credentials-dir` (src/source/git/fetch.rs).
#[test]
fn the_git_credentials_secrets_are_created_as_written() {
    let cluster = cluster();
    let namespace = format!("je-docs-git-{}", std::process::id());
    cluster.kubectl(&["create", "namespace", &namespace]);
    let dir = std::env::temp_dir().join(format!("je-docs-git-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("id_ed25519"), "a private key\n").unwrap();
    let keyscan = dir.join("bin/ssh-keyscan");
    std::fs::write(
        &keyscan,
        "#!/bin/sh\necho \"$1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleHostKey\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &keyscan,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(&cluster.admin_kubeconfig, &kubeconfig).unwrap();
    cluster.kubectl_as(
        &kubeconfig,
        &[
            "config",
            "set-context",
            "--current",
            "--namespace",
            &namespace,
        ],
    );
    let block = sh_block("docs/git-source.md", "## Credentials")
        .replace("-n job-executor ", &format!("-n {namespace} "));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(&dir)
        .env(
            "PATH",
            format!(
                "{}:{}:{}",
                dir.join("bin").display(),
                cluster.dir.join("bin").display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBECACHEDIR", cluster.dir.join("kube-cache"))
        .output()
        .unwrap();
    assert_ran(out, &block);
    let keys = |name: &str| -> BTreeSet<String> {
        let secret = cluster.kubectl_json(&["-n", &namespace, "get", "secret", name]);
        secret["data"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        keys("git-credentials"),
        BTreeSet::from(["username".to_string(), "token".to_string()])
    );
    assert_eq!(
        keys("git-ssh"),
        BTreeSet::from(["ssh-privatekey".to_string(), "known_hosts".to_string()])
    );
    let fetch = std::fs::read_to_string(root().join("src/source/git/fetch.rs")).unwrap();
    for key in [
        "\"username\"",
        "\"token\"",
        "\"ssh-privatekey\"",
        "\"known_hosts\"",
    ] {
        assert!(fetch.contains(key), "the git source no longer reads {key}");
    }
    let _ = cluster.kubectl_output(
        &cluster.admin_kubeconfig,
        &["delete", "namespace", &namespace, "--wait=false"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/BENCHMARKS.md: every command, in quick mode (`cargo test` in place of `cargo bench`: the
/// same harness, its phases, its variables, briefly). The plain `cargo test --bench load` is
/// what `scripts/test` runs anyway (`--all-targets`), so it is not run twice.
/// A benchmark command as run in quick mode: `cargo test` for `cargo bench`, and without what
/// only a full run's size needs. A raised `CLUSTER_API_QPS` would start the control plane the
/// other tests use again under them (the variable has a test of its own:
/// `the_cluster_request_limits_reach_the_components_as_written`), and more than 200 runs in
/// flight are the quick plan's own number.
fn quick_command(command: &str) -> String {
    command
        .split(' ')
        .filter(|word| {
            !word.starts_with("CLUSTER_API_QPS=")
                && word
                    .strip_prefix("LOAD_IN_FLIGHT=")
                    .and_then(|runs| runs.parse::<u32>().ok())
                    .is_none_or(|runs| runs <= 200)
        })
        .collect::<Vec<_>>()
        .join(" ")
        .replace("cargo bench", "cargo test")
}

#[test]
fn the_benchmark_commands_run_in_quick_mode() {
    // `LOAD_TARGET=cluster` needs the CRD, which the install tests delete and re-create.
    let _crd = DOCS_NAMESPACE.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = cluster();
    let mut commands: Vec<String> = Vec::new();
    for block in sh_blocks("docs/BENCHMARKS.md") {
        for line in block.text.lines() {
            let command = line.split(" # ").next().unwrap().trim();
            let command = quick_command(command);
            if !command.is_empty()
                && command != "cargo test --bench load"
                && !commands.contains(&command)
            {
                commands.push(command);
            }
        }
    }
    assert!(commands.len() >= 4, "{commands:?}");
    for command in commands {
        let mut bash = Command::new("bash");
        bash.args(["-euo", "pipefail", "-c", &command])
            .current_dir(root())
            .env("KUBECONFIG", &cluster.admin_kubeconfig);
        // What cargo sets for this test, which a nested cargo would take as changed
        // environment and rebuild for.
        for (name, _) in std::env::vars() {
            if [
                "CARGO_MANIFEST",
                "CARGO_PKG_",
                "CARGO_CRATE",
                "CARGO_BIN",
                "CARGO_PRIMARY",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                || ["CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&name.as_str())
            {
                bash.env_remove(name);
            }
        }
        let out = bash.output().unwrap();
        assert_ran(out.clone(), &command);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if command.contains("--bench load") {
            assert!(
                stdout.contains("load harness: checked:"),
                "{command}: {stdout}"
            );
            assert!(
                !stdout.contains("(target"),
                "quick mode shows no targets: {stdout}"
            );
        }
        if let Some(phases) = command
            .split_whitespace()
            .find_map(|w| w.strip_prefix("LOAD_PHASES="))
        {
            let rows = stdout
                .lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| measurement"))
                .count();
            assert!(rows >= phases.split(',').count(), "{command}: {stdout}");
        }
        if command.contains("LOAD_PHASES=requests") {
            // The writes per run the section shows are exact counts, on either server.
            for (run, writes) in [("one task", 5), ("three tasks", 9)] {
                let row = format!("one run of {run} ");
                let line = stdout
                    .lines()
                    .find(|l| l.contains(&row))
                    .unwrap_or_default();
                assert!(
                    line.contains(&format!("— writes {writes},")),
                    "{command}: {run}: {line}"
                );
            }
        }
        if command.contains("LOAD_IN_FLIGHT=200") {
            assert!(stdout.contains("200 runs in flight"), "{command}: {stdout}");
        }
        if command.contains("LOAD_TARGET=cluster") {
            assert!(
                stdout.contains("target: the real API server"),
                "{command}: {stdout}"
            );
        }
        if let Some(replicas) = command
            .split_whitespace()
            .find_map(|w| w.strip_prefix("LOAD_REPLICAS="))
        {
            assert!(
                stdout.contains(&format!("replicas: {replicas};")),
                "{command}: {stdout}"
            );
        }
    }
}

/// docs/install.md, "Send the first event" and "Watch it work", as written, after "Install with
/// kubectl". KWOK plays the installed Deployment's pod; the operator runs here in its place
/// (the pod's ServiceAccount token, the Secret's ingest token, the example configs for the git
/// repository), and KWOK forwards the pod's port 8080 to it, so `kubectl port-forward` goes
/// through the API server and the kubelet endpoint as on a real cluster.
#[test]
fn the_first_event_is_sent_and_watched_as_written() {
    let _namespace = DOCS_NAMESPACE.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(first_event_as_written());
}

async fn first_event_as_written() {
    let cluster = cluster();
    fresh_namespace(cluster);
    let install = sh_block("docs/install.md", "## Install with kubectl");
    assert_ran(
        run_block(cluster, &install, &[("KEPTN_API_TOKEN", "t")]),
        &install,
    );
    let token = cluster.kubectl(&[
        "-n",
        "job-executor",
        "get",
        "secret",
        "job-executor",
        "-o",
        "go-template={{index .data \"ingest-token\" | base64decode}}",
    ]);
    let dir = support::fresh_dir("docs-first");
    let kubeconfig = cluster.service_account_kubeconfig(
        "job-executor",
        "job-executor",
        &dir.join("sa.kubeconfig"),
    );
    let harness = ClusterHarness::with_install(
        cluster,
        "job-executor".to_string(),
        dir.clone(),
        kubeconfig,
        &root().join("examples"),
        &["--ingest-token", &token],
    )
    .await;
    // Every replica's pod forwards its port 8080 to the operator on the host (whichever pod
    // `kubectl port-forward service/…` picks).
    let pods = cluster.kubectl(&[
        "-n",
        "job-executor",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=job-executor",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let pods: Vec<&str> = pods.split_whitespace().collect();
    assert!(!pods.is_empty(), "no operator pod");
    for pod in &pods {
        let forward = serde_json::json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "PortForward",
            "metadata": {"name": pod, "namespace": "job-executor"},
            "spec": {"forwards": [{
                "ports": [8080],
                "target": {"address": "127.0.0.1", "port": harness.ingest.unwrap().port()}
            }]}
        });
        let forward_file = dir.join(format!("port-forward-{pod}.json"));
        std::fs::write(&forward_file, forward.to_string()).unwrap();
        cluster.kubectl(&["apply", "-f", path(&forward_file)]);
    }

    // Send the first event: the port-forward stays in the background, as in a terminal.
    let send = sh_block("docs/install.md", "## Send the first event");
    let mut child = block_command(cluster, &send, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        // The block's last command ends it; the port-forward keeps the pipes open.
        for line in BufReader::new(&mut stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("event(s):");
            text.push_str(&line);
            text.push('\n');
            if done {
                break;
            }
        }
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the block did not end within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    let out = reader.join().unwrap();
    stop_group(&mut child);
    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
    assert!(status.success(), "{send}\n{out}\n{err}");
    assert!(out.contains(": 202 {"), "{out}\n{err}");
    assert!(out.contains("1 accepted, 0 refused"), "{out}\n{err}");
    let finished = harness
        .wait_finished(
            "1a0e2f4c-6b8d-4e1f-a3c5-7d9e0b2a4c6e",
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(finished.data["status"], "succeeded", "{:?}", finished.data);

    // The pod's log, for `kubectl logs deployment/job-executor`: the operator's, in the
    // container runtime's log format, where KWOK reads the pod's log.
    let operator_log: String = harness
        .operator_log()
        .lines()
        .map(|line| format!("2026-01-01T00:00:00.000000000Z stderr F {line}\n"))
        .collect();
    let pod_logs = cluster.dir.join("pod-logs");
    for pod in &pods {
        let container_logs: Vec<_> = std::fs::read_dir(&pod_logs)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|file| {
                file.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("job-executor_{pod}_"))
            })
            .collect();
        assert_eq!(container_logs.len(), 1, "the operator pod's one container");
        std::fs::write(&container_logs[0], &operator_log).unwrap();
    }

    // Watch it work, line by line; `--watch` runs until the run shows as succeeded.
    let run = harness.jobruns()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let watch = sh_block("docs/install.md", "## Watch it work");
    let lines: Vec<&str> = watch.lines().collect();
    assert_eq!(lines.len(), 3, "{watch}");
    for line in lines {
        let command = line.split(" # ").next().unwrap().trim();
        if command.ends_with("--watch") {
            let mut child = block_command(cluster, command, &[])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let run = run.clone();
            std::thread::spawn(move || {
                let mut seen = String::new();
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(&run) && line.contains("Succeeded") {
                        break;
                    }
                }
                let _ = tx.send(seen);
            });
            let seen = rx.recv_timeout(Duration::from_secs(30));
            stop_group(&mut child);
            let seen = seen.expect("the watch showed the run within 30 s");
            assert!(seen.contains("Succeeded"), "{seen}");
            continue;
        }
        let out = run_block(cluster, command, &[]);
        assert_ran(out.clone(), command);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if command.contains("get jobs,pods") {
            assert!(stdout.contains(&format!("job.batch/{run}")), "{stdout}");
            assert!(stdout.contains(&format!("pod/{run}")), "{stdout}");
        } else if command.contains("logs deployment/") {
            assert!(
                stdout.contains(&run),
                "the operator's log names the run: {stdout}"
            );
        } else {
            panic!("a command this test does not know: {command}");
        }
    }
    drop(harness);
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/operator.md, "Authenticating senders": the shell recipe for a signed request, with
/// `openssl` and `curl`, against the operator (on the simulator) with that secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signed_request_of_the_docs_is_accepted() {
    let dir = support::fresh_dir("docs-hmac");
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, "a shared secret\n").unwrap();
    let h = support::Harness::start(&["--ingest-hmac-secret-file", path(&secret_file)]).await;
    let block = sh_block("docs/operator.md", "### Authenticating senders");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(root())
        .env("SECRET", "a shared secret")
        .env("URL", format!("http://{}/events", h.ingest.unwrap()))
        .output()
        .unwrap();
    assert_ran(out.clone(), &block);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["events"][0]["runs"][0]["status"], "created",
        "{answer}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/config.md's example of a concurrency group is a config the binary loads, and its
/// preview fills the group in from the event.
#[test]
fn the_concurrency_example_of_the_config_reference_loads_and_renders() {
    let plan = render_config_example("### Concurrency groups", "docs-concurrency");
    assert_eq!(
        plan["matched"][0]["concurrency"],
        serde_json::json!({"group": "deploy/sockshop/dev/carts", "limit": 1, "policy": "queue"})
    );
}
