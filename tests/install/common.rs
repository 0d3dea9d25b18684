//! Helpers: paths, the Python tools in .venv (Helm engine, kubernetes-validate), YAML streams.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_job-executor");
pub const CHART: &str = "charts/job-executor";
pub const FULL_VALUES: &str = "charts/job-executor/ci/full-values.yaml";
pub const NOTIFICATIONS_VALUES: &str = "charts/job-executor/ci/notifications-values.yaml";
pub const DEPLOY_VALUES: &str = "deploy/values/service.yaml";
pub const DEPLOY_NETWORK_VALUES: &str = "deploy/values/network-policies.yaml";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A tool `scripts/setup-tools` installs under the checkout (`default`), or where the
/// environment variable `env` says.
pub fn installed_tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    assert!(
        path.exists(),
        "{} not found at {}: run scripts/setup-tools (or the README's test command)",
        path.file_name().unwrap_or_default().to_string_lossy(),
        path.display()
    );
    path
}

/// `kubernetes-validate`, installed by `scripts/setup-tools` (env KUBERNETES_VALIDATE).
pub fn kubernetes_validate() -> PathBuf {
    installed_tool("KUBERNETES_VALIDATE", ".venv/bin/kubernetes-validate")
}

/// The Python of the same virtual environment (it has helm-python-sdk).
pub fn python() -> PathBuf {
    let python = kubernetes_validate().with_file_name("python");
    assert!(python.exists(), "{} not found", python.display());
    python
}

/// Runs tests/install/helm.py; panics with its output when it fails.
pub fn helm(args: &[&str]) -> String {
    let output = Command::new(python())
        .arg("tests/install/helm.py")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The chart rendered with the values files (release job-executor, namespace job-executor).
pub fn render(values: &[&str]) -> String {
    let mut args = vec!["render", CHART];
    for file in values {
        args.extend(["-f", file]);
    }
    helm(&args)
}

/// Validates a YAML stream against the upstream Kubernetes 1.33 and 1.37 schemas, strictly.
pub fn validate_manifests(name: &str, yaml: &str) {
    let dir = tempdir(name);
    let file = dir.join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    for version in ["1.33.0", "1.37.0"] {
        let output = Command::new(kubernetes_validate())
            .args(["--strict", "--quiet", "-k", version])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name} does not validate against Kubernetes {version}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "job-executor-install-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The documents of a YAML stream (empty ones dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The one document of `kind` (and `name`, when given).
pub fn find<'a>(docs: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name:?}, found {}",
        found.len()
    );
    found[0]
}

pub fn exists(path: &Path) -> bool {
    root().join(path).exists()
}
