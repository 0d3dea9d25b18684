//! The real control plane of `scripts/cluster` (kube-apiserver, kube-controller-manager,
//! kube-scheduler, etcd, KWOK), and a harness that installs job-executor into a namespace of it
//! and runs the operator outside the cluster under the installed ServiceAccount's token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Operator, Recorded, Replicas, root};

/// The running control plane (`scripts/cluster env`).
pub struct Cluster {
    pub env: BTreeMap<String, String>,
    pub admin_kubeconfig: PathBuf,
    /// The multi-call binary: `kubectl`, `helm`, the components.
    pub bin: PathBuf,
    pub dir: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// Starts the control plane once per test binary (`scripts/cluster up` returns at once when it
/// already runs) and applies the JobRun CRD. A cluster that cannot start fails the test.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let script = root().join("scripts/cluster");
        let up = Command::new(&script)
            .arg("up")
            .status()
            .expect("run scripts/cluster up");
        assert!(
            up.success(),
            "scripts/cluster up failed (its output is above)"
        );
        let out = Command::new(&script)
            .arg("env")
            .output()
            .expect("run scripts/cluster env");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let cluster = Cluster {
            admin_kubeconfig: PathBuf::from(&env["KUBECONFIG"]),
            bin: PathBuf::from(&env["CLUSTER_BIN"]),
            dir: PathBuf::from(&env["CLUSTER_DIR"]),
            env,
        };
        cluster.kubectl(&["apply", "-f", path(&root().join("crds"))]);
        cluster
    })
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

impl Cluster {
    pub fn pid(&self, name: &str) -> u32 {
        self.env[name].parse().unwrap()
    }

    /// `kubectl ARGS` as the admin; the output, or the test fails with kubectl's error.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_as(&self.admin_kubeconfig, args)
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> String {
        let output = self.kubectl_output(kubeconfig, args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn kubectl_output(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("kubectl")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBECACHEDIR", self.dir.join("kube-cache"))
            .output()
            .expect("run kubectl")
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&args)).unwrap()
    }

    /// `helm ARGS` as the admin.
    pub fn helm(&self, args: &[&str]) -> String {
        let output = Command::new(&self.bin)
            .arg("helm")
            .args(args)
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"))
            .output()
            .expect("run helm");
        assert!(
            output.status.success(),
            "helm {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl rollout status` of the operator's Deployment in `namespace` (KWOK marks its pod
    /// running).
    pub fn rollout_status(&self, namespace: &str) {
        self.kubectl(&[
            "-n",
            namespace,
            "rollout",
            "status",
            "deployment/job-executor",
            "--timeout=60s",
        ]);
    }

    /// Creates a namespace whose pods must pass the `restricted` Pod Security Standard.
    pub fn restricted_namespace(&self, name: &str) {
        let _ = self.kubectl_output(&self.admin_kubeconfig, &["create", "namespace", name]);
        self.kubectl(&[
            "label",
            "--overwrite",
            "namespace",
            name,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ]);
    }

    /// A kubeconfig holding a token of the ServiceAccount `namespace/name`, made with
    /// `kubectl create token` (what the real authenticator and RBAC authorizer see).
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str, file: &Path) -> PathBuf {
        let token = self.kubectl(&["-n", namespace, "create", "token", name, "--duration", "6h"]);
        let admin = std::fs::read_to_string(&self.admin_kubeconfig).unwrap();
        let start = admin.find("token: ").unwrap() + "token: ".len();
        let end = start + admin[start..].find('\n').unwrap();
        let config = format!("{}{}{}", &admin[..start], token.trim(), &admin[end..]);
        std::fs::write(file, config).unwrap();
        file.to_path_buf()
    }

    /// The API server's audit records (`scripts/cluster` logs every request of a
    /// ServiceAccount at the Metadata level) for the ServiceAccount `namespace/name`.
    pub fn audit(&self, namespace: &str, name: &str) -> Vec<Value> {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|e| e["user"]["username"] == user.as_str())
            .collect()
    }
}

/// job-executor installed with Helm into its own restricted namespace of the real cluster
/// (the operator's Deployment scaled to 0), and the operator binary running outside the
/// cluster with the installed ServiceAccount's token.
pub struct ClusterHarness {
    pub cluster: &'static Cluster,
    pub namespace: String,
    pub op: Operator,
}

impl std::ops::Deref for ClusterHarness {
    type Target = Operator;
    fn deref(&self) -> &Operator {
        &self.op
    }
}

impl std::ops::DerefMut for ClusterHarness {
    fn deref_mut(&mut self) -> &mut Operator {
        &mut self.op
    }
}

impl Drop for ClusterHarness {
    fn drop(&mut self) {
        self.op.kill_operator();
        if !std::thread::panicking() {
            let _ = self.cluster.kubectl_output(
                &self.cluster.admin_kubeconfig,
                &["delete", "namespace", &self.namespace, "--wait=false"],
            );
        }
    }
}

fn directory_source(config_dir: &Path) -> Vec<String> {
    vec!["--config-dir".to_string(), path(config_dir).to_string()]
}

impl ClusterHarness {
    /// Installs into namespace `je-NAME` and runs the operator with `config_dir`.
    pub async fn start(name: &str, config_dir: &Path, extra_args: &[&str]) -> ClusterHarness {
        let mut harness = Self::install(name, config_dir, extra_args).await;
        harness.start_operator().await;
        harness
    }

    /// Installs into namespace `je-NAME` and runs the operator with `source_args` (`--git-url`
    /// and its settings) in place of a config directory.
    pub async fn start_from(
        name: &str,
        source_args: Vec<String>,
        extra_args: &[&str],
    ) -> ClusterHarness {
        let mut harness = Self::install_from(name, source_args, extra_args).await;
        harness.start_operator().await;
        harness
    }

    /// Installs like [`ClusterHarness::start`], the operator not started (for [`Replicas`]).
    pub async fn install(name: &str, config_dir: &Path, extra_args: &[&str]) -> ClusterHarness {
        Self::install_from(name, directory_source(config_dir), extra_args).await
    }

    async fn install_from(
        name: &str,
        source_args: Vec<String>,
        extra_args: &[&str],
    ) -> ClusterHarness {
        let cluster = cluster();
        let namespace = format!("je-{name}-{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("je-cluster-{namespace}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        cluster.restricted_namespace(&namespace);
        cluster.helm(&[
            "install",
            "job-executor",
            path(&root().join("charts/job-executor")),
            "--namespace",
            &namespace,
            "--set",
            "replicas=0",
        ]);
        let kubeconfig = cluster.service_account_kubeconfig(
            &namespace,
            "job-executor",
            &dir.join("operator.kubeconfig"),
        );
        Self::not_started(cluster, namespace, dir, kubeconfig, source_args, extra_args).await
    }

    /// The operator for an installation made by the test (namespace, the ServiceAccount's
    /// kubeconfig), with the example's Secrets created in the namespace.
    pub async fn with_install(
        cluster: &'static Cluster,
        namespace: String,
        dir: PathBuf,
        kubeconfig: PathBuf,
        config_dir: &Path,
        extra_args: &[&str],
    ) -> ClusterHarness {
        let source_args = directory_source(config_dir);
        let mut harness =
            Self::not_started(cluster, namespace, dir, kubeconfig, source_args, extra_args).await;
        harness.start_operator().await;
        harness
    }

    async fn not_started(
        cluster: &'static Cluster,
        namespace: String,
        dir: PathBuf,
        kubeconfig: PathBuf,
        source_args: Vec<String>,
        extra_args: &[&str],
    ) -> ClusterHarness {
        for secret in super::example_secrets() {
            let file = dir.join(format!(
                "{}.json",
                secret.metadata.name.as_deref().unwrap_or("secret")
            ));
            std::fs::write(&file, serde_json::to_vec(&secret).unwrap()).unwrap();
            cluster.kubectl(&["-n", &namespace, "apply", "-f", path(&file)]);
        }
        let op = Operator::new(dir, kubeconfig, &namespace, source_args, extra_args).await;
        ClusterHarness {
            cluster,
            namespace,
            op,
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all)
    }

    pub fn list(&self, resource: &str) -> Vec<Value> {
        let list = self
            .cluster
            .kubectl_json(&["-n", &self.namespace, "get", resource]);
        list["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn jobruns(&self) -> Vec<Value> {
        self.list("jobruns.job-executor.dev")
    }

    /// What the operator's ServiceAccount asked the API server, from its audit log.
    pub fn requests(&self) -> Vec<Value> {
        self.cluster.audit(&self.namespace, "job-executor")
    }

    /// Job creations the API server accepted, by Job name (from the audit log).
    pub fn jobs_created(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| {
                r["verb"] == "create"
                    && r["objectRef"]["resource"] == "jobs"
                    && r["responseStatus"]["code"] == 201
            })
            .map(|r| {
                r["objectRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// `(verb, resource[/subresource])` pairs the operator used, from the audit log; a
    /// non-resource URL as `(verb, path)`.
    pub fn permissions_used(&self) -> BTreeSet<(String, String)> {
        self.requests()
            .iter()
            .map(|r| {
                // A non-resource URL (`/version`) is named by its path.
                if r["objectRef"].is_null() {
                    let uri = r["requestURI"].as_str().unwrap_or_default();
                    let path = uri.split('?').next().unwrap_or_default().to_string();
                    return (r["verb"].as_str().unwrap_or_default().to_string(), path);
                }
                let resource = r["objectRef"]["resource"].as_str().unwrap_or_default();
                let resource = match r["objectRef"]["subresource"].as_str() {
                    Some(sub) => format!("{resource}/{sub}"),
                    None => resource.to_string(),
                };
                (r["verb"].as_str().unwrap_or_default().to_string(), resource)
            })
            .collect()
    }

    /// Polls the cluster until `condition` holds, or fails the test after `timeout`.
    pub async fn eventually(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\noperator log:\n{}",
                self.operator_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Replicas for ClusterHarness {
    fn jobruns(&self) -> Vec<Value> {
        ClusterHarness::jobruns(self)
    }

    fn admin_shell(&self, script: &str, env: &[(&str, &str)]) -> String {
        super::run_shell(script, &self.cluster.admin_kubeconfig, &self.namespace, env)
    }

    fn objects(&self, group: &str, resource: &str) -> Vec<Value> {
        if group.is_empty() {
            self.list(resource)
        } else {
            self.list(&format!("{resource}.{group}"))
        }
    }

    /// A ServiceAccount `user` bound to the installed Role.
    async fn credentials(&self, user: &str) -> PathBuf {
        self.kubectl(&["create", "serviceaccount", user]);
        let account = format!("{}:{user}", self.namespace);
        self.kubectl(&[
            "create",
            "rolebinding",
            user,
            "--role=job-executor",
            &format!("--serviceaccount={account}"),
        ]);
        self.cluster.service_account_kubeconfig(
            &self.namespace,
            user,
            &self.dir.join(format!("{user}.kubeconfig")),
        )
    }

    /// The audit records of every ServiceAccount of the namespace.
    fn recorded(&self) -> Vec<Recorded> {
        let prefix = format!("system:serviceaccount:{}:", self.namespace);
        let log = std::fs::read_to_string(self.cluster.dir.join("audit.log")).unwrap_or_default();
        let mut records: Vec<Recorded> = log
            .lines()
            .filter(|line| line.contains(&prefix))
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|r| {
                let user = r["user"]["username"].as_str()?.strip_prefix(&prefix)?;
                let received: jiff::Timestamp =
                    r["requestReceivedTimestamp"].as_str()?.parse().ok()?;
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                Some(Recorded {
                    user: user.to_string(),
                    verb: text(&r["verb"]),
                    resource: text(&r["objectRef"]["resource"]),
                    name: text(&r["objectRef"]["name"]),
                    status: r["responseStatus"]["code"]
                        .as_u64()
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or_default(),
                    order: i128::from(received.as_microsecond()),
                })
            })
            .collect();
        records.sort_by_key(|r| r.order);
        records
    }

    fn name(&self) -> &'static str {
        "the real API server"
    }
}
