//! The install commands of README.md and docs/install.md, run exactly as written (the shell
//! block under their heading, extracted from the Markdown) on the real control plane, so the
//! documentation cannot drift from what works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Output};

use support::cluster::{Cluster, cluster};
use support::root;

/// The first ```sh block after the line `heading` of `doc` (a path under the repository).
fn sh_block(doc: &str, heading: &str) -> String {
    let text = std::fs::read_to_string(root().join(doc)).unwrap();
    let after = &text[text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("{doc} has no heading {heading:?}"))..];
    let start = after.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + after[start..].find("\n```").expect("the block's end");
    after[start..end].to_string()
}

/// Runs `block` with bash as a user would: from the repository, with the control plane's
/// kubectl and helm and the built `job-executor` first on the PATH.
fn run_block(cluster: &Cluster, block: &str, env: &[(&str, &str)]) -> Output {
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
        .env_remove("KEPTN_API_TOKEN");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn fresh_namespace(cluster: &Cluster) {
    let _ = cluster.kubectl_output(
        &cluster.admin_kubeconfig,
        &["delete", "namespace", "job-executor", "--timeout=90s"],
    );
}

fn assert_installed(cluster: &Cluster, token: &str) {
    let secret = cluster.kubectl_json(&["-n", "job-executor", "get", "secret", "job-executor"]);
    let parsed: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).unwrap();
    let data = parsed.data.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&data["sink-headers"].0),
        format!("x-token: {token}")
    );
    assert_eq!(data["ingest-token"].0.len(), 48, "openssl rand -hex 24");
    cluster.rollout_status("job-executor");
    cluster.kubectl(&["get", "crd", "jobruns.job-executor.dev"]);
}

#[test]
fn the_install_commands_of_the_docs_work_as_written() {
    let cluster = cluster();

    // docs/install.md, "Install with kubectl".
    fresh_namespace(cluster);
    let block = sh_block("docs/install.md", "## Install with kubectl");
    assert_ran(
        run_block(cluster, &block, &[("KEPTN_API_TOKEN", "docs-token")]),
        &block,
    );
    assert_installed(cluster, "docs-token");

    // README.md, "Install": the same, and the config repository set on the Deployment.
    fresh_namespace(cluster);
    let block = sh_block("README.md", "## Install");
    assert_ran(
        run_block(cluster, &block, &[("KEPTN_API_TOKEN", "readme-token")]),
        &block,
    );
    assert_installed(cluster, "readme-token");
    let deployment =
        cluster.kubectl_json(&["-n", "job-executor", "get", "deployment", "job-executor"]);
    assert!(
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .to_string()
            .contains("JOB_EXECUTOR_GIT_URL"),
        "{deployment}"
    );

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
    let crd = cluster.kubectl_output(
        &cluster.admin_kubeconfig,
        &["get", "crd", "jobruns.job-executor.dev"],
    );
    assert!(!crd.status.success(), "the CRD is gone");
    cluster.kubectl(&[
        "wait",
        "--for=delete",
        "namespace/job-executor",
        "--timeout=90s",
    ]);

    // docs/install.md, "Install with Helm": the chart installs the CRD and rolls out.
    let helm = sh_block("docs/install.md", "## Install with Helm");
    assert_ran(run_block(cluster, &helm, &[]), &helm);
    cluster.kubectl(&["get", "crd", "jobruns.job-executor.dev"]);
    cluster.rollout_status("job-executor");
    cluster.helm(&[
        "uninstall",
        "job-executor",
        "--namespace",
        "job-executor",
        "--wait",
    ]);
    fresh_namespace(cluster);
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
